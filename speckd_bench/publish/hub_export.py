"""`speckd-bench export RUN_ID OUT_DIR`: a run's final student as a standard Hugging Face model folder
(safetensors, config, tokenizer with its chat template, a generation config that decodes as the run's
evaluation did, at the model's own lengths) with a README.md model card written from the run record
(huggingface_hub's ModelCard; metadata in card_data.py); optionally pushed to the hub."""

from __future__ import annotations

import copy
import shutil
import tempfile
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard
from transformers import GenerationConfig

from speckd_bench.caches import follow_umask
from speckd_bench.config.run_config import RunConfig
from speckd_bench.data.tasks import TASKS, discover_tasks
from speckd_bench.engine.eval_run import config_of_run, run_checkpoint, run_dir_of, run_record
from speckd_bench.errors import UserError
from speckd_bench.evaluation.lmeval import lm_eval_metrics
from speckd_bench.formatting import metric_digits, number
from speckd_bench.leaderboard.report import build_sections, render
from speckd_bench.models.loading import load_teacher
from speckd_bench.publish.card_data import card_data
from speckd_bench.records.run_record import RunRecord

RUN_CONFIG = "speckd_run_config.json"


def generation_config(cfg: RunConfig, model: Any, tokenizer: Any) -> GenerationConfig:
    """The model's own generation defaults with the decoding mode of the run's evaluation: greedy, or its
    sampling settings. Its answer budget (eval.max_new_tokens) is the protocol's, not the model's: users
    generate as long as the model's defaults allow."""
    config = copy.deepcopy(model.generation_config)
    sample = cfg.eval.decoding == "sample"
    config.max_new_tokens = None
    config.do_sample = sample
    config.temperature, config.top_p, config.top_k = (
        (cfg.eval.temperature, cfg.eval.top_p, cfg.eval.top_k) if sample else (None, None, None)
    )
    config.pad_token_id = tokenizer.pad_token_id
    config.eos_token_id = tokenizer.eos_token_id
    config.bos_token_id = tokenizer.bos_token_id
    if cfg.eval.no_repeat_ngram_size:
        config.no_repeat_ngram_size = cfg.eval.no_repeat_ngram_size
    return config


def _scores(record: RunRecord) -> list[str]:
    """Per eval set: every metric of the raw and init student, the trained one and the teacher."""
    lines: list[str] = []
    for name, per_set in record.metrics.items():
        before = per_set.get("before", {})
        teacher = per_set.get("reference", {}).get("teacher", {}).get("metrics", {})
        after = per_set.get("after", {}).get("metrics", {})
        lines += [f"**{name}**", "", "| metric | raw student | init student | this model | teacher |"]
        lines.append("|---|---|---|---|---|")
        for metric, value in after.items():
            raw, init = (before.get(s, {}).get("metrics", {}).get(metric) for s in ("raw", "init"))
            cells = [number(v, metric_digits(metric)) for v in (raw, init, value, teacher.get(metric))]
            lines.append(f"| {metric} | {' | '.join(cells)} |")
        lines.append("")
    return lines


def _loading(out_name: str, chat_template: bool) -> list[str]:
    prompt = (
        'messages = [{"role": "user", "content": prompt}]\n'
        "ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_dict=True, "
        'return_tensors="pt")["input_ids"]'
        if chat_template
        else 'ids = tok(prompt, add_special_tokens=False, return_tensors="pt").input_ids'
    )
    return [
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        f'tok = AutoTokenizer.from_pretrained("{out_name}")',
        f'model = AutoModelForCausalLM.from_pretrained("{out_name}")',
        'prompt = "Name three primary colours."',
        prompt,
        "out = model.generate(ids, max_new_tokens=256)  # the run's decoding: generation_config.json",
        "print(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True))",
        "```",
    ]


def _lm_eval(record: RunRecord) -> list[str]:
    """lm-eval's scores of the trained student (lm-eval's scale), or why there are none."""
    lm_eval = record.lm_eval
    if not lm_eval:
        return []
    if "error" in lm_eval:
        return [f"**lm-eval** failed after training: {lm_eval['error']}", ""]
    lines = [f"**lm-eval** {lm_eval.get('lm_eval_version', '')} (limit {lm_eval.get('limit')})", ""]
    lines += ["| task | metric | filter | this model |", "|---|---|---|---|"]
    for task, metric, filter_name, value in lm_eval_metrics(lm_eval):
        lines.append(f"| {task} | {metric} | {filter_name} | {number(value, 4)} |")
    return [*lines, ""]


def model_card(record: RunRecord, run_dir: Path, cfg: RunConfig, out_name: str) -> ModelCard:
    """The exported folder's model card: its metadata (card_data.py), then recipe, method, data,
    protocol, scores, provenance and loading."""
    models, data, info = record.models, record.data, record.method_info
    method = record.method
    sections = build_sections([record], run_dir.parent.parent)
    commit = record.git_commit or "unknown"
    settings = ", ".join(f"{k}={v}" for k, v in record.config["method"].items())
    body = "\n".join(
        [
            "---",
            card_data(record).to_yaml(),
            "---",
            "",
            f"# {record.run_id}",
            "",
            f"A student distilled from `{models['teacher']}` with **{method}** ({info['description']}) by "
            f"speckd-bench {record.versions.get('speckd_bench', '?')} (commit `{commit[:12]}`), "
            f"training seed {record.seed}, on {record.task}.",
            "",
            "## Recipe",
            "",
            f"- Teacher: `{models['teacher']}` ({models.get('teacher_params', 0) / 1e6:.1f}M parameters, "
            f"{models.get('teacher_source', '')})",
            f"- Student: `{models['student']}` ({models.get('student_params', 0) / 1e6:.1f}M parameters; "
            f"{models.get('student_init', '')})",
            f"- Warm start: {_warm_start(record)}",
            f"- Method: `{method}`; paper: {info.get('paper') or '-'}; data policy: {info['data_policy']}",
            f"- Method settings: {settings}",
            f"- Training: {_training(record.config['train'])}; {record.training.get('steps')} steps, "
            f"final loss {record.training.get('final_loss', float('nan')):.4g}",
            "",
            "## Data and protocol",
            "",
            f"- Train: {data['n_train']} rows of `{Path(data['train_file']).name}` ({record.task})",
            *(
                f"- Eval set {name}: {s.get('n_eval', 0)} rows ({Path(s.get('source', '?')).name})"
                for name, s in data["eval_sets"].items()
                if "skipped" not in s
            ),
            *(f"- Protocol ({s.eval_set}): {s.description}" for s in sections),
            "",
            "## Scores",
            "",
            *_scores(record),
            *_lm_eval(record),
            "The leaderboard row of this run, with the reference rows of its protocol:",
            "",
            render(sections, "md"),
            "## Use",
            "",
            *_loading(out_name, cfg.data.chat_template),
            "",
            "## Provenance",
            "",
            f"- Harness: speckd-bench {record.versions.get('speckd_bench', '?')}, commit `{commit}`",
            f"- Versions: {', '.join(f'{k} {v}' for k, v in record.versions.items())}",
            f"- Run: `{record.run_id}`, created {record.created}",
            f"- Reproduce: `speckd-bench run --config {RUN_CONFIG}` (the run's resolved config, in this "
            "folder; its data_dir and results_dir are the training machine's)",
            "",
        ]
    )
    return ModelCard(body)


def _warm_start(record: RunRecord) -> str:
    init = record.init
    if not init.get("enabled"):
        return "none"
    plan = init.get("plan", {})
    return f"SFT on {plan.get('rows')} rows, epochs {plan.get('epochs')}, lr {plan.get('lr')}"


def _training(train: dict[str, Any]) -> str:
    keys = ("lr", "epochs", "max_steps", "batch_size", "grad_accum", "scheduler", "warmup_ratio")
    return ", ".join(f"{k} {train[k]}" for k in keys if k in train)


def _check_out_dir(out_dir: Path, force: bool, results_dir: Path) -> None:
    """An output folder that is a file, not empty (without force), or that holds or sits inside the
    results folder or a run folder is refused: --force replaces the folder whole."""
    out, results = out_dir.resolve(), results_dir.resolve()
    runs = [p.resolve() for p in (results / "runs").glob("*") if p.is_dir()]
    for protected in [results, *runs]:
        if out == protected or out.is_relative_to(protected) or protected.is_relative_to(out):
            raise UserError(
                f"{out_dir} holds or is inside {protected}, which export must never replace; "
                "pass an output folder outside the results folder"
            )
    if out_dir.is_file():
        raise UserError(f"{out_dir} is a file; pass a directory to export into")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise UserError(f"{out_dir} is not empty; pass --force to replace its contents")


def export_run(
    run: str, results_dir: Path, out_dir: Path, force: bool = False, name: str | None = None
) -> Path:
    """Write the run's final student and its model card to out_dir (replaced whole with force); `name`:
    what the card's loading example passes to from_pretrained (a hub repo; default: out_dir)."""
    _check_out_dir(out_dir, force, results_dir)
    run_dir = run_dir_of(run, results_dir)
    record = run_record(run_dir)
    cfg = config_of_run(run_dir, {})
    if record.task not in TASKS:  # the built-in tasks, for the card's datasets
        discover_tasks()
    checkpoint = run_checkpoint(run_dir)
    model, tokenizer, _ = load_teacher(str(checkpoint))
    model.generation_config = generation_config(cfg, model, tokenizer)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}-"))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        shutil.copy(run_dir / "config.json", tmp / RUN_CONFIG)
        model_card(record, run_dir, cfg, name or str(out_dir)).save(tmp / "README.md")
        for path in tmp.iterdir():  # a folder to share, not the private one mkdtemp makes
            follow_umask(path)
        follow_umask(tmp, directory=True)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def push_to_hub(out_dir: Path, repo: str) -> str:
    """Upload the exported folder to the hub repo (created if missing); returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        api.create_repo(repo, exist_ok=True)
        info = api.upload_folder(folder_path=str(out_dir), repo_id=repo, commit_message="speckd-bench export")
    except Exception as exc:  # network, auth, repo id: whatever the hub client raises, one line
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        raise UserError(f"--push-to-hub {repo}: upload failed ({type(exc).__name__}: {first})") from None
    return str(info)
