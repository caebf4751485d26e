"""Trivial floors: what a score is worth when the model writes nothing useful. Computed from the eval set
alone (and, for the constant, from the training references), so every table can show whether a method
beats an answer that needs no model at all.

- empty: the empty output.
- constant: the best of a fixed list of strings, chosen on the training references with the task's main
  metric, then scored on the eval set (choosing on the eval set would flatter the floor).
- echo_<field>: the prompt field itself as the answer (the instruction, the input, the document), one per
  field of the task's prompt templates.
"""

from __future__ import annotations

from typing import Any

from speckd_bench.api.metrics import score
from speckd_bench.data.examples import template_fields
from speckd_bench.data.tasks import TaskSpec
from speckd_bench.evaluation.degeneracy import degeneracy

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
"""Candidates of the constant floor: single words, function-word salads and a bland generic sentence."""
CHOICE_ROWS = 500
"""Training rows the constant is chosen on."""


def _scored(task: TaskSpec, outputs: list[str], refs: list[list[str]]) -> dict[str, Any]:
    answers = [task.answer(o) for o in outputs]
    return {"metrics": score(task.metrics, answers, refs)["corpus"], "degeneracy": degeneracy(outputs)}


def best_constant(task: TaskSpec, train_rows: list[dict[str, Any]]) -> str:
    """The candidate with the highest main metric on (up to CHOICE_ROWS) training references."""
    rows = train_rows[:CHOICE_ROWS]
    refs = [task.references(r) for r in rows]
    main = task.metrics[0]

    def value(text: str) -> float:
        return score([main], [task.answer(text)] * len(rows), refs)["corpus"][main]

    return max(CONSTANTS, key=value)


def floor_scores(
    task: TaskSpec, eval_rows: list[dict[str, Any]], train_rows: list[dict[str, Any]] | None
) -> dict[str, dict[str, Any]]:
    """{floor name: {"output", "metrics", "degeneracy", ...}} on the eval rows. Without training rows
    (an eval-only task) the constant is chosen on the eval references, and says so."""
    refs = [task.references(r) for r in eval_rows]
    n = len(eval_rows)
    floors: dict[str, dict[str, Any]] = {"empty": {"output": "", **_scored(task, [""] * n, refs)}}
    chosen_on = "train references" if train_rows else "eval references (the task has no train split)"
    constant = best_constant(task, train_rows or eval_rows)
    floors["constant"] = {
        "output": constant,
        "chosen_from": list(CONSTANTS),
        "chosen_on": chosen_on,
        **_scored(task, [constant] * n, refs),
    }
    for name in template_fields(task):
        outputs = [str(r.get(name) or "") for r in eval_rows]
        floors[f"echo_{name}"] = {"output": f"<{name}>", **_scored(task, outputs, refs)}
    return floors
