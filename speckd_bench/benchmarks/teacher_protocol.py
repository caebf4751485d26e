"""How well does the teacher do a task, next to the trivial floors, under each prompt format and answer
length? The protocol study behind the default preset's choices (docs/protocol.md).

For each task and prompt format (the task's own template, or that template inside the tokenizer's chat
template) the teacher decodes greedily up to the longest answer length once; shorter lengths are the same
greedy outputs cut to their first N tokens (greedy decoding of N tokens is exactly that prefix).

    speckd-bench bench teacher-protocol --task dolly --rows 200     # about 15 minutes on 2 CPU cores
"""

from __future__ import annotations

from typing import Any

import torch

from speckd_bench.api.metrics import score
from speckd_bench.benchmarks.common import machine_header, markdown_table
from speckd_bench.config.run_config import DataConfig, EvalConfig, resolve_teacher_dtype
from speckd_bench.data.examples import build_examples
from speckd_bench.data.rows import load_rows
from speckd_bench.data.tasks import TASKS, discover_tasks, run_defaults
from speckd_bench.evaluation.degeneracy import degeneracy
from speckd_bench.evaluation.floors import floor_scores
from speckd_bench.evaluation.generate import generate
from speckd_bench.models.loading import load_teacher

FORMATS = {"task template": False, "chat template": True}


def _cut(tokenizer: Any, texts: list[str], n: int) -> list[str]:
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [tokenizer.decode(t[:n], skip_special_tokens=True) for t in ids]


def study_task(
    name: str, rows: int, lengths: list[int], teacher: Any, tokenizer: Any, data_dir: str | None
) -> list[dict[str, Any]]:
    """Rows of the table for one task: every (format, length) with the teacher's score and the floors."""
    task = TASKS.get(name)
    defaults = run_defaults(name, "")
    data = DataConfig(data_dir=data_dir)
    for key, value in defaults.items():
        if key.startswith("data.") and key != "data.max_eval_examples":
            setattr(data, key.split(".", 1)[1], value)
    eval_rows = load_rows(task, "eval", data)[:rows]
    train_rows = load_rows(task, "train", data) if "train" in task.splits else None
    floors = floor_scores(task, eval_rows, train_rows)
    main = task.metrics[0]
    best_floor = max(floors, key=lambda f: floors[f]["metrics"][main])
    refs = [task.references(r) for r in eval_rows]
    out = []
    for label, chat in FORMATS.items():
        data.chat_template = chat
        examples = build_examples(task, eval_rows, tokenizer, data)
        cfg = EvalConfig(max_new_tokens=max(lengths), batch_size=25)
        gen = generate(teacher, tokenizer, [e.prompt_ids for e in examples], cfg, 10, f"{name} {label}", True)
        for n in lengths:
            texts = _cut(tokenizer, gen.texts, n)
            value = score([main], [task.answer(t) for t in texts], refs)["corpus"][main]
            out.append(
                {
                    "task": name,
                    "format": label,
                    "new_tokens": n,
                    "rows": len(eval_rows),
                    "metric": main,
                    "teacher": value,
                    "empty_floor": floors["empty"]["metrics"][main],
                    "constant_floor": floors["constant"]["metrics"][main],
                    "best_floor": f"{best_floor} {floors[best_floor]['metrics'][main]:.2f}",
                    "margin": value - floors[best_floor]["metrics"][main],
                    "teacher_empty": degeneracy(texts)["empty"],
                    "gen_s": gen.seconds,
                }
            )
    return out


COLUMNS = [
    ("task", "task", "{}"),
    ("format", "prompt", "{}"),
    ("new_tokens", "new tokens", "{}"),
    ("rows", "rows", "{}"),
    ("metric", "metric", "{}"),
    ("teacher", "teacher", "{:.2f}"),
    ("empty_floor", "empty", "{:.2f}"),
    ("constant_floor", "constant", "{:.2f}"),
    ("best_floor", "best floor", "{}"),
    ("margin", "teacher - best floor", "{:+.2f}"),
    ("teacher_empty", "teacher empty", "{:.0%}"),
    ("gen_s", "decode s (longest)", "{:.0f}"),
]


def main(tasks: list[str], rows: int, lengths: list[int], dtype: str, data_dir: str | None) -> str:
    discover_tasks()
    teacher, tokenizer, _ = load_teacher("smollm2-135m-instruct")
    resolved = resolve_teacher_dtype(dtype)
    teacher.to(getattr(torch, resolved)).eval().requires_grad_(False)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    table = [r for name in tasks for r in study_task(name, rows, lengths, teacher, tokenizer, data_dir)]
    facts = {"teacher": f"smollm2-135m-instruct ({resolved})", "decoding": "greedy, eval batch 25"}
    return machine_header("Teacher protocol", facts) + "\n\n" + markdown_table(table, COLUMNS)
