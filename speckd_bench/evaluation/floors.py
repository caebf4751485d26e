"""Trivial floors: what a score is worth when the model writes nothing useful, or predicts the next token
with no model at all. Every choice is made on the training split (an eval-only task falls back to its eval
references and says so): choosing on the eval set would flatter the floor.

- empty: the empty output.
- constant: the best of a fixed list of strings and a greedy one (function words of the training
  references appended while the training score improves), chosen with the task's main metric.
- echo_<field>: the prompt field itself as the answer (the instruction, the input, the document), one per
  field of the task's prompt templates; echo_<field>_<field>: all of them together, blank-line separated.
- Fidelity floors (tf_top1, tf_fkl at the student's teacher-forced positions), from token counts of the
  training responses: unigram (add-one smoothed; its top-1 is the most frequent response token, a
  constant-token predictor) and bigram (the next token given the current one, add-one smoothed).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from speckd_bench.api.metrics import score
from speckd_bench.caches import atomic_write_json, building, cache_dir, digest, read_json
from speckd_bench.data.examples import IGNORE, Batch, Example, template_fields
from speckd_bench.data.tasks import TaskSpec, task_digest
from speckd_bench.evaluation.degeneracy import degeneracy
from speckd_bench.evaluation.fidelity import LogProbs, compare_to_teacher

CONSTANTS = (
    "The",
    "Yes.",
    "No.",
    "0",
    "I don't know.",
    "The the a the a the",
    "It is a the of and to in",
    "The answer is the one that is the most important part of the world.",
)
"""Fixed candidates of the constant floor: single words, function-word salads and a bland generic sentence."""
CHOICE_ROWS = 500
"""Training rows the constant is chosen on."""
GREEDY_ROWS = 200
"""Training rows the greedy constant is built on (each step scores GREEDY_WORDS strings on them)."""
GREEDY_WORDS = 10
"""Candidate words of the greedy constant: the most frequent words of the training references."""
GREEDY_LENGTH = 12
"""Words the greedy constant stops at."""


def _scored(task: TaskSpec, outputs: list[str], refs: list[list[str]]) -> dict[str, Any]:
    answers = [task.answer(o) for o in outputs]
    return {"metrics": score(task.metrics, answers, refs)["corpus"], "degeneracy": degeneracy(outputs)}


def _constant_score(task: TaskSpec, text: str, refs: list[list[str]]) -> float:
    """The task's main metric of `text` answered to every reference list."""
    main = task.metrics[0]
    return score([main], [task.answer(text)] * len(refs), refs)["corpus"][main]


def frequent_words(refs: list[list[str]], n: int) -> list[str]:
    """The n most frequent whitespace-separated words of the references (first seen first on ties)."""
    return [w for w, _ in Counter(w for texts in refs for t in texts for w in t.split()).most_common(n)]


def greedy_constant(task: TaskSpec, refs: list[list[str]]) -> str:
    """A string built word by word: each step appends the frequent word that most raises the main metric on
    `refs`; it stops when no word raises it (or at GREEDY_LENGTH words)."""
    words = frequent_words(refs, GREEDY_WORDS)
    text, best = "", _constant_score(task, "", refs)
    for _ in range(GREEDY_LENGTH):
        value, longer = max(
            (_constant_score(task, t, refs), t) for t in (f"{text} {w}".lstrip() for w in words)
        )
        if value <= best:
            break
        text, best = longer, value
    return text


def _greedy_problem(path: Path) -> str | None:
    try:
        entry = read_json(path)
    except ValueError as exc:
        return str(exc)
    return None if isinstance(entry, dict) and isinstance(entry.get("text"), str) else "not a greedy constant"


def cached_greedy_constant(task: TaskSpec, refs: list[list[str]]) -> str:
    """greedy_constant(), cached per task (file, hook, metrics) and references: it scores ~100 strings."""
    path = cache_dir() / "floors" / f"{task.name}-{digest([task_digest(task), refs])}.json"
    with building(path, _greedy_problem, collective=False) as hit:
        if hit:
            return read_json(path)["text"]
        text = greedy_constant(task, refs)
        atomic_write_json(path, {"text": text})
        return text


def best_constant(task: TaskSpec, train_rows: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """(the candidate with the highest main metric on up to CHOICE_ROWS training references, the candidates:
    CONSTANTS and the greedy string built on the first GREEDY_ROWS of them)."""
    refs = [task.references(r) for r in train_rows[:CHOICE_ROWS]]
    candidates = list(dict.fromkeys((*CONSTANTS, cached_greedy_constant(task, refs[:GREEDY_ROWS]))))
    return max(candidates, key=lambda text: _constant_score(task, text, refs)), candidates


def _echo(rows: list[dict[str, Any]], fields: list[str]) -> list[str]:
    """The rows' non-empty values of `fields`, one blank line apart."""
    return ["\n\n".join(v for name in fields if (v := str(r.get(name) or ""))) for r in rows]


def floor_scores(
    task: TaskSpec, eval_rows: list[dict[str, Any]], train_rows: list[dict[str, Any]] | None
) -> dict[str, dict[str, Any]]:
    """{floor name: {"output", "metrics", "degeneracy", ...}} on the eval rows. Without training rows
    (an eval-only task) the constant is chosen on the eval references, and says so."""
    refs = [task.references(r) for r in eval_rows]
    n = len(eval_rows)
    floors: dict[str, dict[str, Any]] = {"empty": {"output": "", **_scored(task, [""] * n, refs)}}
    chosen_on = "train references" if train_rows else "eval references (the task has no train split)"
    constant, candidates = best_constant(task, train_rows or eval_rows)
    floors["constant"] = {
        "output": constant,
        "chosen_from": candidates,
        "chosen_on": chosen_on,
        **_scored(task, [constant] * n, refs),
    }
    fields = template_fields(task)
    for group in [[name] for name in fields] + ([fields] if len(fields) > 1 else []):
        output = " + ".join(f"<{name}>" for name in group)
        floors[f"echo_{'_'.join(group)}"] = {"output": output, **_scored(task, _echo(eval_rows, group), refs)}
    return floors


@dataclass(frozen=True)
class TokenFloors:
    """Token counts of training responses, for the fidelity floors (see floor_log_probs)."""

    unigram: torch.Tensor
    """[V] how often each token is a response token (EOS included)."""
    bigram: torch.Tensor
    """[V, V] sparse: how often token j is the response token after token i (the last prompt token
    before the first)."""


def response_positions(examples: list[Example]) -> tuple[torch.Tensor, torch.Tensor]:
    """(the token each teacher-forced position reads, the token it predicts), over the examples' response
    positions in collate's order: the last prompt token then the response but its last, and the response."""
    reads = [t for e in examples for t in (e.prompt_ids[-1], *e.target_ids[:-1])]
    predicts = [t for e in examples for t in e.target_ids]
    return torch.tensor(reads, dtype=torch.long), torch.tensor(predicts, dtype=torch.long)


def fit_token_floors(examples: list[Example], vocab_size: int) -> TokenFloors:
    """Unigram and bigram counts of the training examples' response positions."""
    reads, predicts = response_positions(examples)
    pairs, counts = torch.unique(reads * vocab_size + predicts, return_counts=True)
    index = torch.stack([pairs // vocab_size, pairs % vocab_size])
    bigram = torch.sparse_coo_tensor(
        index, counts.float(), (vocab_size, vocab_size), check_invariants=True
    ).coalesce()
    return TokenFloors(torch.bincount(predicts, minlength=vocab_size).float(), bigram)


def floor_log_probs(floors: TokenFloors, kind: str, reads: torch.Tensor) -> torch.Tensor:
    """The `kind` ("unigram" | "bigram") floor's log-probabilities [n, V] at positions reading `reads`.

    unigram, add-one: q(v) = (c(v) + 1) / (N + V), the same at every position. bigram, the counts after `u`
    smoothed toward the unigram: q(v | u) = (c(u, v) + q(v)) / (c(u) + 1), so an unseen `u` predicts the
    unigram and equal counts are ordered by it. Dense [n, V]: call per batch."""
    vocab = floors.unigram.numel()
    unigram = (floors.unigram + 1) / (floors.unigram.sum() + vocab)
    if kind == "unigram":
        return unigram.log().expand(len(reads), vocab)
    counts = floors.bigram.index_select(0, reads).to_dense()
    return ((counts + unigram) / (counts.sum(-1, keepdim=True) + 1)).log()


TOKEN_FLOORS = {
    "unigram": "the training responses' token frequencies at every position",
    "bigram": "the training responses' next-token frequencies after the token read",
}
"""The fidelity floors: predictors that need no model, fitted on the training responses."""


def token_floor_fidelity(
    floors: TokenFloors, teacher: Any, examples: list[Example], pad_id: int, vocab_size: int
) -> dict[str, dict[str, Any]]:
    """Floor rows of the fidelity metrics: each token floor scored against the teacher on the positions
    the students are scored on, pooled over tokens like theirs."""

    def predictor(kind: str) -> LogProbs:
        def log_probs(batch: Batch) -> torch.Tensor:
            reads = batch.input_ids[batch.labels != IGNORE].cpu()
            return floor_log_probs(floors, kind, reads).to(batch.input_ids.device)

        return log_probs

    forced = compare_to_teacher(
        {k: predictor(k) for k in TOKEN_FLOORS}, teacher, examples, pad_id, vocab_size
    )
    return {
        f"{kind}_tokens": {
            "output": f"<{kind}: {TOKEN_FLOORS[kind]}>",
            "metrics": {k: v for k, v in forced[kind].corpus().items() if not k.endswith("_prompt")},
        }
        for kind in TOKEN_FLOORS
    }
