"""Text metrics on a 0-100 scale: ROUGE (rouge-score, Porter stemmer, max over references), BLEU and
chrF (sacrebleu, corpus level), exact match (SQuAD normalisation, max over references), accuracy (the
extracted answer equals a reference); and answer extraction for math tasks (numbers).
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from functools import cache
from typing import Any

from speckd_bench.registry import Registry

# rouge-score and sacrebleu load when a metric is computed, not when this module is imported: the train
# loop (through tasks -> metrics) then runs where only torch and transformers are installed (the GPU
# smoke check, `speckd-bench bench gpu-smoke`).


class Better(Enum):
    """Which way a metric improves: every ranking, sort and best mark of the leaderboard reads it."""

    HIGHER = "higher"
    LOWER = "lower"

    @property
    def sign(self) -> int:
        """+1 when higher is better, -1 when lower is: sign * value is largest for the best value."""
        return 1 if self is Better.HIGHER else -1


@dataclass(frozen=True)
class Metric:
    name: str
    description: str
    per_example: Callable[[str, list[str]], float] | None
    """Score of one output against its references; None for corpus-level metrics."""
    corpus: Callable[[list[str], list[list[str]]], float]
    raw: bool = False
    """Score the model's whole output instead of the answer the task's hook extracts from it (a format
    metric: did the model follow the asked-for layout)."""
    better: Better = Better.HIGHER


METRICS: Registry[Metric] = Registry("metric")


@dataclass(frozen=True)
class FidelityMetric:
    """A figure of fidelity to the teacher that the evaluation computes itself (no task names it)."""

    name: str
    description: str
    better: Better


# Fidelity to the teacher, reported beside the task's metrics (in this order) by every run that has a
# teacher: teacher-forced forward / reverse KL, total variation and top-1 agreement on the reference
# continuations, pooled over the eval set's reference tokens (each token counts once), and ROUGE-L of the
# outputs against the teacher's own outputs on the same prompts.
FIDELITY = (
    FidelityMetric("tf_fkl", "teacher-forced forward KL, nats per reference token", Better.LOWER),
    FidelityMetric("tf_rkl", "teacher-forced reverse KL, nats per reference token", Better.LOWER),
    FidelityMetric("tf_tvd", "teacher-forced total variation distance per reference token", Better.LOWER),
    FidelityMetric("tf_top1", "teacher-forced top-1 agreement with the teacher (%)", Better.HIGHER),
    FidelityMetric("rougeL_teacher", "ROUGE-L of the outputs against the teacher's outputs", Better.HIGHER),
)
FIDELITY_METRICS = tuple(m.name for m in FIDELITY)
# The teacher-forced metrics as means over prompts (every prompt weighs the same, however long): recorded
# beside the pooled ones, shown only when asked for (--metric tf_top1_prompt).
PER_PROMPT_FIDELITY = tuple(
    FidelityMetric(f"{m.name}_prompt", f"{m.description}, mean over prompts", m.better)
    for m in FIDELITY
    if m.name.startswith("tf_")
)


def better(name: str) -> Better:
    """The direction a task or fidelity metric declared; higher for a name this process has not
    registered (a plugin's metric whose task was not loaded)."""
    if name in METRICS:
        return METRICS.get(name).better
    return next((m.better for m in (*FIDELITY, *PER_PROMPT_FIDELITY) if m.name == name), Better.HIGHER)


@cache
def _scorer(kind: str) -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer([kind], use_stemmer=True)


def rouge(kind: str, prediction: str, references: list[str]) -> float:
    scorer = _scorer(kind)
    return 100.0 * max(scorer.score(ref, prediction)[kind].fmeasure for ref in references)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, references: list[str]) -> float:
    return 100.0 * max(float(normalize_answer(prediction) == normalize_answer(ref)) for ref in references)


def accuracy(prediction: str, references: list[str]) -> float:
    """100 when the (extracted) answer equals a reference exactly after trimming spaces, else 0."""
    return 100.0 * float(prediction.strip() in {ref.strip() for ref in references})


# A number: optional sign (not a hyphen after a word, as in "10-15"), optional "$", thousands
# separators only in groups of three, optional decimals ("18." ends a sentence, not a decimal).
_NUMBER = re.compile(r"(?:(?<![\w)\]])-)?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")


def canonical_number(token: str) -> str:
    """'$1,234.50' -> '1234.5', '18.00' -> '18', '-7' -> '-7'."""
    text = format(Decimal(token.replace(",", "").replace("$", "")).normalize(), "f")
    return "0" if text == "-0" else text


def last_number(text: str) -> str:
    """The last number in a model output, canonical; '' when there is none."""
    numbers = _NUMBER.findall(text)
    return canonical_number(numbers[-1]) if numbers else ""


def number_after(text: str, marker: str) -> str:
    """The number after the last `marker` (GSM8K references end in '#### 72'); '' without a marker."""
    _, found, tail = text.rpartition(marker)
    return last_number(tail) if found else ""


def _ref_streams(references: list[list[str]]) -> list[list[str]]:
    """sacrebleu wants equally many reference streams; repeating a reference changes no score."""
    width = max(len(r) for r in references)
    return [[r[min(j, len(r) - 1)] for r in references] for j in range(width)]


def bleu(predictions: list[str], references: list[list[str]]) -> float:
    import sacrebleu

    return sacrebleu.corpus_bleu(predictions, _ref_streams(references)).score


def chrf(predictions: list[str], references: list[list[str]]) -> float:
    import sacrebleu

    return sacrebleu.corpus_chrf(predictions, _ref_streams(references)).score


def _mean_of(per_example: Callable[[str, list[str]], float]) -> Callable[[list[str], list[list[str]]], float]:
    def corpus(predictions: list[str], references: list[list[str]]) -> float:
        scores = [per_example(p, r) for p, r in zip(predictions, references, strict=True)]
        return sum(scores) / len(scores) if scores else 0.0

    return corpus


def register_metric(
    name: str,
    description: str,
    per_example: Callable[[str, list[str]], float] | None = None,
    corpus: Callable[[list[str], list[list[str]]], float] | None = None,
    raw: bool = False,
    better: Better = Better.HIGHER,
) -> Metric:
    """Register a metric (task hooks may add their own): per example (averaged) or corpus level; `raw`
    scores the whole output rather than the extracted answer; `better`: which way it improves."""
    if per_example is None and corpus is None:
        raise ValueError(f"metric {name} needs a per_example or a corpus function")
    metric = Metric(name, description, per_example, corpus or _mean_of(per_example), raw, better)
    return METRICS.register(name, metric, replace=True)


for _kind in ("rougeL", "rouge1", "rouge2"):
    _fn = (lambda kind: lambda p, r: rouge(kind, p, r))(_kind)
    register_metric(_kind, f"{_kind} F1 (rouge-score, Porter stemmer), max over references", _fn)
register_metric("exact_match", "exact match after SQuAD normalisation, max over references", exact_match)
register_metric("accuracy", "extracted answer equals a reference (e.g. GSM8K final number)", accuracy)
register_metric("bleu", "corpus BLEU (sacrebleu defaults)", corpus=bleu)
register_metric("chrf", "corpus chrF (sacrebleu defaults)", corpus=chrf)


def score(
    names: list[str] | tuple[str, ...],
    predictions: list[str],
    references: list[list[str]],
    outputs: list[str] | None = None,
) -> dict:
    """{metric: corpus score} and per-example scores for the metrics that have them. `predictions` are
    the extracted answers; `outputs` the whole outputs they came from, which raw metrics score."""
    corpus, per_example = {}, {}
    for name in names:
        metric = METRICS.get(name)
        scored = outputs if metric.raw and outputs is not None else predictions
        if metric.per_example is None:
            corpus[name] = metric.corpus(scored, references)
            continue
        values = [metric.per_example(p, r) for p, r in zip(scored, references, strict=True)]
        per_example[name] = values
        corpus[name] = sum(values) / len(values) if values else 0.0
    return {"corpus": corpus, "per_example": per_example}
