"""Evaluate a student on eval sets: generate for every prompt (once per eval seed when sampling), extract
the answer when the task has a hook, score with the task's metrics, and return metrics (per seed, mean,
std) plus the samples (prompt, references, output).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from speckd_bench.api.metrics import rouge, score
from speckd_bench.config.run_config import DataConfig, EvalConfig
from speckd_bench.data.examples import Example, build_examples
from speckd_bench.data.rows import DataUnavailable, Rows, load_split
from speckd_bench.data.tasks import TASKS, TaskSpec, eval_set_names
from speckd_bench.distributed import process_context
from speckd_bench.evaluation.degeneracy import degeneracy
from speckd_bench.evaluation.fidelity import TeacherForced, teacher_forced
from speckd_bench.evaluation.generate import generate
from speckd_bench.progress import warn


@dataclass
class EvalResult:
    metrics: dict[str, float]
    """Mean over eval seeds of each corpus metric."""
    per_seed: dict[int, dict[str, float]]
    std: dict[str, float]
    new_tokens: int
    seconds: float
    samples: list[dict[str, Any]] = field(default_factory=list)
    degeneracy: dict[str, float] = field(default_factory=dict)
    """degeneracy.degeneracy() of the outputs of every eval seed."""

    def summary(self) -> dict[str, Any]:
        return {
            "metrics": self.metrics,
            "degeneracy": self.degeneracy,
            "std_over_eval_seeds": self.std,
            "per_seed": {str(k): v for k, v in self.per_seed.items()},
            "new_tokens": self.new_tokens,
            "seconds": self.seconds,
            "tokens_per_s": self.new_tokens / self.seconds if self.seconds else 0.0,
        }


def eval_seeds(cfg: EvalConfig) -> list[int]:
    """Greedy decoding is deterministic: one pass with the first seed; sampling: one pass per seed."""
    return list(cfg.seeds) if cfg.decoding == "sample" else list(cfg.seeds[:1])


@dataclass
class TeacherView:
    """What the fidelity metrics compare a student with: the teacher, and its outputs per eval set and
    eval seed (from the teacher's own cached evaluation)."""

    model: Any
    vocab_size: int
    outputs: dict[str, dict[int, list[str]]] = field(default_factory=dict)
    logits: dict[str, Sequence[torch.Tensor]] = field(default_factory=dict)
    """Per eval set, the teacher's kept logits of its teacher-forced examples (eval.keep_teacher_logits)."""


def _add_fidelity(
    per_seed: dict[int, dict[str, float]],
    samples: list[dict[str, Any]],
    forced: TeacherForced,
    teacher_outputs: dict[int, list[str]],
) -> None:
    """Teacher-forced figures (the same for every eval seed) and ROUGE-L against the teacher's output of
    the same prompt and eval seed, into the per-seed corpus scores and every sample's scores: a sample
    holds its prompt's own teacher-forced means (`<metric>_prompt`) and target tokens (`tf_tokens`)."""
    per_prompt = forced.per_prompt()
    for sample in samples:
        scores, i = sample["scores"], sample["index"]
        scores.update({name: values[i] for name, values in per_prompt.items()}, tf_tokens=forced.tokens[i])
        theirs = teacher_outputs.get(sample["eval_seed"])
        if theirs is not None:
            scores["rougeL_teacher"] = rouge("rougeL", sample["output"], [theirs[i]])
    for seed, corpus in per_seed.items():
        corpus.update(forced.corpus())
        values = [
            s["scores"]["rougeL_teacher"]
            for s in samples
            if s["eval_seed"] == seed and seed in teacher_outputs
        ]
        if values:
            corpus["rougeL_teacher"] = statistics.fmean(values)


def evaluate(
    model: Any,
    tokenizer: Any,
    examples: list[Example],
    metric_names: tuple[str, ...],
    cfg: EvalConfig,
    label: str,
    quiet: bool,
    extract: Callable[[str], str] | None = None,
    teacher: TeacherView | None = None,
    teacher_outputs: dict[int, list[str]] | None = None,
    forced: list[Example] | None = None,
    teacher_logits: Sequence[torch.Tensor] | None = None,
) -> EvalResult:
    """Score `examples`; `extract` maps each output to the answer the metrics see (e.g. its last number).
    With `teacher`, the fidelity metrics are added (ROUGE-L to the teacher where `teacher_outputs`),
    teacher-forced on `forced` (whose first rows are `examples`; default: `examples`), from
    `teacher_logits` where the teacher's logits of `forced` are kept.

    In a multi-process run each process generates for its shard of the prompts; the outputs are gathered
    in the prompts' order, so every process scores all of them (tokens summed, seconds of the slowest).
    """
    dist = process_context()
    per_seed: dict[int, dict[str, float]] = {}
    samples: list[dict[str, Any]] = []
    new_tokens, seconds = 0, 0.0
    references = [e.references for e in examples]
    for seed in eval_seeds(cfg):
        prompts = dist.shard([e.prompt_ids for e in examples])
        gen = generate(model, tokenizer, prompts, cfg, seed, f"{label} (seed {seed})", quiet)
        texts = dist.gather(gen.texts)
        answers = [extract(t) for t in texts] if extract else texts
        scored = score(metric_names, answers, references, outputs=texts)
        per_seed[seed] = scored["corpus"]
        new_tokens += int(dist.sum([gen.new_tokens])[0])
        seconds += dist.max(gen.seconds)
        raw = dist.gather(gen.raw)
        for i, (ex, text) in enumerate(zip(examples, texts, strict=True)):
            sample = {
                "index": i,
                "eval_seed": seed,
                "prompt": ex.prompt,
                "prompt_tokens": ex.prompt_tokens,
                "prompt_cut": ex.prompt_cut,
                "references": ex.references,
                "output": text,
                "raw_output": raw[i],
            }
            if extract:
                sample["answer"] = answers[i]
            sample["scores"] = {name: values[i] for name, values in scored["per_example"].items()}
            samples.append(sample)
    if teacher is not None:
        pad_id, vocab_size = tokenizer.pad_token_id, teacher.vocab_size
        scored = teacher_forced(model, teacher.model, forced or examples, pad_id, vocab_size, teacher_logits)
        _add_fidelity(per_seed, samples, scored, teacher_outputs or {})
    names = list(next(iter(per_seed.values())))
    mean = {n: statistics.fmean(s[n] for s in per_seed.values()) for n in names}
    std = {n: statistics.pstdev([s[n] for s in per_seed.values()]) for n in names}
    figures = degeneracy([s["output"] for s in samples])
    return EvalResult(mean, per_seed, std, new_tokens, seconds, samples, figures)


@dataclass
class EvalSet:
    """One eval set of a run: a task's eval split; rows load before any model, examples after."""

    task: TaskSpec
    rows: Rows
    """The rows the student answers (data.max_eval_examples)."""
    fidelity_rows: list[dict[str, Any]] = field(default_factory=list)
    """The rows after those that are only scored teacher-forced (data.fidelity_examples)."""
    examples: list[Example] = field(default_factory=list)
    forced: list[Example] = field(default_factory=list)
    """The teacher-forced examples: `examples`, then those of `fidelity_rows`."""

    @property
    def name(self) -> str:
        return self.task.name


def load_eval_sets(task: str, suite: str, data: DataConfig) -> tuple[list[EvalSet], dict[str, str]]:
    """The run's own task first, then the suite's other sets, at most data.max_eval_examples rows each (and
    up to data.fidelity_examples for the fidelity metrics); and {set: reason} for suite sets whose rows
    are unavailable here (hub-only, offline): skipped."""
    sets, skipped = [], {}
    for name in eval_set_names(task, suite):
        spec = TASKS.get(name)
        try:
            rows = load_split(spec, "eval", data)
        except DataUnavailable as exc:
            if name == task:
                raise
            skipped[name] = str(exc)
            continue
        n = data.max_eval_examples
        forced = rows.rows[n : max(n, data.fidelity_examples)]
        sets.append(EvalSet(spec, Rows(rows.rows[:n], rows.source), forced))
    return sets, skipped


def warn_skipped(skipped: dict[str, str]) -> None:
    """Say on stderr which suite sets are skipped and why (even with --quiet)."""
    for name, reason in skipped.items():
        warn(f"skipping eval set {name}: {reason}")


def build_eval_examples(sets: list[EvalSet], tokenizer: Any, data: DataConfig) -> None:
    for es in sets:
        es.examples = build_examples(es.task, es.rows.rows, tokenizer, data)
        es.forced = es.examples + build_examples(es.task, es.fidelity_rows, tokenizer, data)


def evaluate_sets(
    model: Any,
    tokenizer: Any,
    sets: list[EvalSet],
    cfg: EvalConfig,
    label: str,
    quiet: bool,
    teacher: TeacherView | None = None,
) -> dict[str, EvalResult]:
    """{set name: result}; every sample names its eval set. With `teacher`: the fidelity metrics too."""
    results = {}
    for es in sets:
        name = f"{label} {es.name}" if len(sets) > 1 else label
        outputs = teacher.outputs.get(es.name) if teacher else None
        res = evaluate(
            model,
            tokenizer,
            es.examples,
            es.task.metrics,
            cfg,
            name,
            quiet,
            es.task.extract_prediction,
            teacher,
            outputs,
            es.forced,
            teacher.logits.get(es.name) if teacher else None,
        )
        for sample in res.samples:
            sample["eval_set"] = es.name
        results[es.name] = res
    return results


def eval_sets_info(sets: list[EvalSet], skipped: dict[str, str]) -> dict[str, Any]:
    """Per eval set: where its rows came from and how many were scored, or why it was skipped."""
    info: dict[str, Any] = {
        es.name: {"source": es.rows.source, "n_eval": len(es.examples), "n_fidelity": len(es.forced)}
        for es in sets
    }
    info.update({name: {"skipped": reason} for name, reason in skipped.items()})
    return info
