"""lm-evaluation-harness: run it in-process on an in-memory student (HFLM(pretrained=model, ...)), offline
through TaskManager(include_path=...), and export our tasks as lm-eval YAML tasks over the same rows.

An exported task `speckd_<task>` is a generate_until task over a JSON Lines file of rendered rows (prompt,
target, references). It scores with this package's own metrics and answer extraction, through a generated
module `speckd_scoring.py` beside the YAML files, so lm-eval and `speckd-bench` agree on every score.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from speckd_bench.api.metrics import METRICS
from speckd_bench.caches import (
    atomic_write_json,
    atomic_write_jsonl,
    atomic_write_text,
    cache_dir,
    digest,
    read_json,
)
from speckd_bench.config.run_config import DataConfig, EvalConfig, RunConfig
from speckd_bench.data.examples import fit_prompt, prompt_task
from speckd_bench.data.rows import Rows, in_mirror, load_split
from speckd_bench.data.tasks import TASKS, TaskSpec, load_task_file
from speckd_bench.errors import UserError, did_you_mean
from speckd_bench.progress import plain_stderr

PREFIX = "speckd_"
SCORING_MODULE = "speckd_scoring"
TASK_KEYWORD = "@task"


class _Function(str):
    """A `!function module.name` reference in an lm-eval YAML file."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Function, lambda dumper, value: dumper.represent_scalar("!function", str(value)))


def exported_name(task: str) -> str:
    return f"{PREFIX}{task}"


def _identifier(name: str) -> str:
    return re.sub(r"\W", "_", name)


def results_processor(task_file: str) -> Callable[[dict[str, Any], list[str]], dict[str, Any]]:
    """lm-eval `process_results` for an exported task: per-example scores, or (answer, references) items
    for corpus metrics (aggregated by `corpus_aggregation`)."""
    task = load_task_file(Path(task_file))

    def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, Any]:
        answer = task.answer(results[0].strip())
        refs = list(doc["references"])
        scores: dict[str, Any] = {}
        for name in task.metrics:
            metric = METRICS.get(name)
            scores[name] = metric.per_example(answer, refs) if metric.per_example else (answer, refs)
        return scores

    return process_results


def corpus_aggregation(name: str) -> Callable[[list[tuple[str, list[str]]]], float]:
    """lm-eval aggregation of a corpus metric (BLEU, chrF) over (answer, references) items."""
    corpus = METRICS.get(name).corpus

    def aggregate(items: list[tuple[str, list[str]]]) -> float:
        return corpus([answer for answer, _ in items], [list(refs) for _, refs in items])

    return aggregate


def exported_dataset(data_file: str) -> Callable[..., Any]:
    """lm-eval `custom_dataset` for an exported task: its rows, read from the JSON Lines file beside the
    scoring module (dataset_kwargs such as cache_dir pass through; lm-eval's metadata does not)."""

    def load(cache_dir: str | None = None, **_metadata: Any) -> Any:
        import datasets

        return datasets.load_dataset("json", data_files={"test": data_file}, cache_dir=cache_dir)

    return load


def _task_yaml(task: TaskSpec, max_new_tokens: int, datasets_cache: Path | None) -> str:
    metrics = []
    for name in task.metrics:
        per_example = METRICS.get(name).per_example is not None
        aggregation = "mean" if per_example else _Function(f"{SCORING_MODULE}.{_identifier(name)}_corpus")
        metrics.append({"metric": name, "aggregation": aggregation, "higher_is_better": True})
    config: dict[str, Any] = {
        "task": exported_name(task.name),
        "custom_dataset": _Function(f"{SCORING_MODULE}.{_identifier(task.name)}_dataset"),
        "test_split": "test",
        "output_type": "generate_until",
        "doc_to_text": "prompt",
        "doc_to_target": "target",
        "generation_kwargs": {"until": [], "max_gen_toks": max_new_tokens, "do_sample": False},
        "process_results": _Function(f"{SCORING_MODULE}.{_identifier(task.name)}"),
        "metric_list": metrics,
        "metadata": {"version": 1.0},
    }
    if datasets_cache is not None:  # a private datasets cache for in-process runs (run_lm_eval)
        config["dataset_kwargs"] = {"cache_dir": str(datasets_cache)}
    return yaml.dump(config, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=110)


def _copy_task_files(task: TaskSpec, out_dir: Path) -> str:
    """Copy a task's YAML as out_dir/tasks/<name>/task.yml (not *.yaml: lm-eval would read it as one of
    its own) and its hook beside it; the copy's path relative to out_dir."""
    folder = out_dir / "tasks" / task.name
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(task.path, folder / "task.yml")
    if task.hook:
        relative = Path(os.path.relpath(task.hook, Path(task.path).parent))
        if ".." in relative.parts:
            raise UserError(f"task {task.name}: hook {task.hook} is not beside {task.path}; move it there")
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(task.hook, folder / relative)
    return f"tasks/{task.name}/task.yml"


def export_tasks(
    tasks: list[TaskSpec],
    out_dir: Path,
    data: DataConfig | dict[str, DataConfig],
    max_new_tokens: int | dict[str, int] | None = None,
    max_rows: int = 0,
    datasets_cache: Path | None = None,
    tokenizer: Any = None,
) -> list[tuple[str, Rows]]:
    """Write `speckd_<task>.yaml` + `.jsonl` per task (eval split, greedy decoding of max_new_tokens, else
    the task's eval.max_new_tokens; `data` and max_new_tokens may be dicts by task name), a copy of each
    task file and `speckd_scoring.py` to out_dir; returns (name, rows) pairs. Every path in the folder is
    relative to it: it can be moved or shared. Scores are on this package's scale (0-100 for rougeL,
    exact match, accuracy), as in run records.

    Prompts are the harness's own: under data.chat_template the templates' content only (lm-eval's
    --apply_chat_template adds the turn), and with a tokenizer cut to data.max_prompt_length as the
    harness cuts them (data/examples.py); without one they are left whole."""
    out_dir.mkdir(parents=True, exist_ok=True)
    exported = []
    scoring = [
        '"""Scoring of the lm-eval tasks exported by speckd-bench: its own metrics and answer extraction."""',
        "",
        "from pathlib import Path",
        "",
        "from speckd_bench.evaluation.lmeval import corpus_aggregation, exported_dataset, results_processor",
        "",
        "HERE = Path(__file__).resolve().parent",
        "",
    ]
    corpus_metrics: set[str] = set()
    for task in tasks:
        task_data = data[task.name] if isinstance(data, dict) else data
        rows = load_split(task, "eval", task_data)
        if max_rows:
            rows = Rows(rows.rows[:max_rows], rows.source)
        name = exported_name(task.name)
        shown = prompt_task(task, task_data)
        docs = [
            {
                "prompt": fit_prompt(shown, row, tokenizer, task_data).text
                if tokenizer
                else shown.render(row),
                "target": task.target(row),
                "references": task.references(row),
                "source": row["_source"],
            }
            for row in rows.rows
        ]
        atomic_write_jsonl(out_dir / f"{name}.jsonl", docs)
        task_file = _copy_task_files(task, out_dir)
        header = (
            f"# lm-eval task exported by speckd-bench from task {task.name} ({task_file}); {len(docs)} rows "
            f"from {rows.source}.\n# Scores are on speckd-bench's scale (0-100 for rougeL, exact match and "
            f"accuracy), as in its run records. Run: lm-eval --include_path THIS_FOLDER --tasks {name}\n"
        )
        budget = max_new_tokens.get(task.name) if isinstance(max_new_tokens, dict) else max_new_tokens
        new_tokens = budget or task.defaults.get("eval.max_new_tokens", EvalConfig.max_new_tokens)
        atomic_write_text(out_dir / f"{name}.yaml", header + _task_yaml(task, new_tokens, datasets_cache))
        ident = _identifier(task.name)
        scoring.append(f"{ident} = results_processor(str(HERE / {task_file!r}))")
        scoring.append(f"{ident}_dataset = exported_dataset(str(HERE / {name + '.jsonl'!r}))")
        corpus_metrics.update(m for m in task.metrics if METRICS.get(m).per_example is None)
        exported.append((name, rows))
    scoring += [f"{_identifier(m)}_corpus = corpus_aggregation({m!r})" for m in sorted(corpus_metrics)]
    atomic_write_text(out_dir / f"{SCORING_MODULE}.py", "\n".join(scoring) + "\n")
    return exported


def mirrored_tasks(data: DataConfig) -> list[str]:
    """The registered tasks whose eval rows are in the local mirror (what `tasks export-lmeval` exports
    by default)."""
    names = [name for name, task in TASKS.items() if in_mirror(task.splits["eval"], data)]
    if not names:
        raise UserError("no task has its eval rows in the local mirror; pass --data-dir or --task")
    return names


def expand_names(names: list[str], task: str) -> list[str]:
    """`@task` becomes the lm-eval tasks the task file lists; duplicates go."""
    out: list[str] = []
    for name in names:
        if name == TASK_KEYWORD:
            listed = TASKS.get(task).lm_eval
            if not listed:
                raise UserError(f"--lm-eval {TASK_KEYWORD}: task {task} lists no lm-eval tasks (key lm_eval)")
            out.extend(listed)
        else:
            out.append(name)
    return list(dict.fromkeys(out))


def _default_names() -> list[str]:
    """lm-eval's own task, group and tag names: indexing its task folder takes seconds, so the list is
    kept in the cache per lm-eval version and install."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    key = digest([lm_eval.__version__, str(Path(lm_eval.__file__).parent)])
    path = cache_dir() / "lm-eval" / f"tasks-{key}.json"
    if path.is_file():
        try:
            return list(read_json(path))
        except ValueError:
            pass  # garbled: index again
    names = sorted(TaskManager().all_tasks)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, names)
    return names


def _included_names(include: list[str]) -> list[str]:
    """The tasks in the lm_eval.include folders, each of which must be a folder."""
    from lm_eval.tasks import TaskManager

    for folder in include:
        if not Path(folder).is_dir():
            raise UserError(f"lm_eval.include: {folder} is not a folder of lm-eval task YAMLs")
    return list(TaskManager(include_path=include, include_defaults=False).all_tasks) if include else []


def check_lm_eval(cfg: RunConfig) -> list[str]:
    """Before any model loads: lm-eval is installed when asked for, and every task name (after `@task`
    expands) is ours (`speckd_<task>`), in an include folder or lm-eval's own; returns the names. An
    unknown name fails naming the closest ones (a misspelt `speckd_` name at once, without indexing
    lm-eval's own tasks)."""
    if not cfg.lm_eval.tasks:
        return []
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise UserError(
            "--lm-eval needs lm-evaluation-harness: pip install 'speckd-bench[lm-eval]'"
        ) from None
    names = expand_names(cfg.lm_eval.tasks, cfg.task)
    ours = [exported_name(t) for t in TASKS]
    known = {*ours, *_included_names(cfg.lm_eval.include)}
    if any(n not in known and not n.startswith(PREFIX) for n in names):
        known.update(_default_names())
    for name in names:
        if name not in known:
            raise UserError(
                f"unknown lm-eval task {name!r}{did_you_mean(name, sorted(known))}; this harness's tasks "
                f"are {', '.join(ours)}; lm-eval's own are listed by `lm-eval ls tasks`"
            )
    return names


def _task_manager(include: list[str], names: list[str]) -> Any:
    """A TaskManager over the include paths, with lm-eval's own tasks only when a name needs them."""
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=include, include_defaults=False)
    if set(names) - set(manager.all_tasks):
        manager = TaskManager(include_path=include)
    return manager


def _json_safe(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def lm_eval_command(folder: Path, names: list[str], cfg: RunConfig) -> str:
    """The lm-eval command that scores a saved student (MODEL) on exported tasks as a run of cfg does:
    float32 weights, the run's lm-eval batch size and seed, the chat template when the run prompts in it."""
    args = ["lm-eval", "--model", "hf", "--model_args", "pretrained=MODEL,dtype=float32"]
    args += ["--include_path", str(folder), "--tasks", ",".join(names)]
    args += ["--batch_size", str(cfg.lm_eval.batch_size), "--seed", str(cfg.seed)]
    if cfg.data.chat_template:
        args.append("--apply_chat_template")
    return shlex.join(args)


TaskScores = dict[str, Any]
"""What one lm-eval task name's evaluation adds to a record: lm-eval's results, sample counts, shots,
versions and configs for that name (a group brings its subtasks), its seconds and lm-eval's version."""

_OUTPUT_KEYS = {"results": "results", "n_samples": "n-samples", "n_shot": "n-shot", "versions": "versions",
                "configs": "configs"}  # fmt: skip


def run_lm_eval(
    model: Any,
    tokenizer: Any,
    cfg: RunConfig,
    quiet: bool,
    done: dict[str, TaskScores] | None = None,
    on_task: Callable[[str, TaskScores], None] | None = None,
) -> dict[str, Any]:
    """lm-eval on an in-memory model for cfg.lm_eval.tasks; returns what the record stores: the scores,
    sample counts, lm-eval's version and each task's version and resolved config, as lm-eval reports them.
    Each name is evaluated on its own (lm-eval's seeds set afresh for it, so its score does not depend on
    which names ran before it); `on_task` gets each name's scores as they finish, and the names in `done`
    (kept from an interrupted attempt by the same lm-eval version) are not evaluated again."""
    names = check_lm_eval(cfg)
    from lm_eval import __version__ as lm_eval_version

    limit = cfg.lm_eval.limit or cfg.data.max_eval_examples
    kept = (done or {}).items()
    scores = {n: s for n, s in kept if n in names and s.get("lm_eval_version") == lm_eval_version}
    todo = [n for n in names if n not in scores]
    if todo:
        if quiet:
            logging.getLogger("lm_eval").setLevel(logging.ERROR)
        for name, task_scores in _evaluate_each(model, tokenizer, cfg, todo, limit):
            scores[name] = {**task_scores, "lm_eval_version": lm_eval_version}
            if on_task is not None:
                on_task(name, scores[name])
    merged: dict[str, Any] = {"tasks": names, "limit": limit}
    for key in _OUTPUT_KEYS:
        merged[key] = {k: v for n in names for k, v in scores[n][key].items()}
    merged["lm_eval_version"] = lm_eval_version
    merged["seconds"] = sum(scores[n]["seconds"] for n in names)
    return merged


def _evaluate_each(
    model: Any, tokenizer: Any, cfg: RunConfig, names: list[str], limit: int | None
) -> Iterator[tuple[str, TaskScores]]:
    """Each name's scores, one simple_evaluate call per name, over one export of our tasks."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    ours = [TASKS.get(n[len(PREFIX) :]) for n in names if n.startswith(PREFIX) and n[len(PREFIX) :] in TASKS]
    with tempfile.TemporaryDirectory(prefix="speckd-lmeval-") as tmp:
        folder = Path(tmp)
        export_tasks(ours, folder, cfg.data, cfg.eval.max_new_tokens, limit, folder / "datasets", tokenizer)
        manager = _task_manager([tmp, *cfg.lm_eval.include], names)
        model.eval()
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=cfg.lm_eval.batch_size)
        for name in names:
            start = time.perf_counter()
            try:
                with plain_stderr():  # off a terminal: lm-eval's warnings, without its bars' redraws
                    out = simple_evaluate(
                        model=lm,
                        tasks=[name],
                        task_manager=manager,
                        limit=limit,
                        bootstrap_iters=0,
                        log_samples=False,
                        apply_chat_template=cfg.data.chat_template,
                        random_seed=cfg.seed,
                        numpy_random_seed=cfg.seed,
                        torch_random_seed=cfg.seed,
                        fewshot_random_seed=cfg.seed,
                    )
            except (ConnectionError, OSError) as exc:
                raise UserError(
                    f"lm-eval could not load the data of task {name} ({type(exc).__name__}: "
                    f"{str(exc)[:160]}); lm-eval's own tasks need the hub or a filled HF datasets cache, "
                    "speckd_<task> tasks need the mirror"
                ) from None
            task_scores = {key: _json_safe(out.get(source, {})) for key, source in _OUTPUT_KEYS.items()}
            yield name, {**task_scores, "seconds": time.perf_counter() - start}


def lm_eval_metrics(lm_eval: dict[str, Any] | None) -> list[tuple[str, str, str, float]]:
    """(task, metric, filter, value) of every score in a record's lm_eval part (lm-eval's `metric,filter`
    keys), standard errors left out; none when lm-eval was not run or failed."""
    scores = []
    for task, values in ((lm_eval or {}).get("results") or {}).items():
        for key, value in values.items():
            metric, comma, filter_name = key.partition(",")  # not `alias` or `sample_len`: no filter
            if not comma or metric.endswith("_stderr") or not isinstance(value, int | float):
                continue
            scores.append((task, metric, filter_name, float(value)))
    return scores


def rerun_command(run_id: str, cfg: RunConfig) -> str:
    """The command that runs cfg's lm-eval tasks again on a recorded run's student."""
    args = ["speckd-bench", "eval", "--run", run_id, "--results-dir", cfg.results_dir]
    args += ["--lm-eval", ",".join(cfg.lm_eval.tasks)]
    for folder in cfg.lm_eval.include:
        args += ["--lm-eval-include", folder]
    if cfg.data.data_dir:
        args += ["--data-dir", cfg.data.data_dir]
    return shlex.join(args)


def failure_line(exc: BaseException) -> str:
    """An exception as the one line a record keeps (a UserError is its message)."""
    text = (str(exc).strip().splitlines() or [""])[0][:200]
    return text if isinstance(exc, UserError) else f"{type(exc).__name__}: {text}".rstrip(": ")
