"""Task rows (local mirror first, then the hub) -> prompts and targets -> token batches.

Labels are already shifted: labels[b, t] is the token that position t predicts, or -100 where the loss
must not count (prompt and padding). The EOS that ends every response is a target even when the
tokenizer's pad token equals its EOS token.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from speckd_bench.config import DataConfig
from speckd_bench.errors import UserError
from speckd_bench.tasks import SplitSource, TaskSpec

IGNORE = -100


def mirror_dir(cfg: DataConfig) -> Path | None:
    """--data-dir, else $SPECKD_DATA_DIR, else None (hub only)."""
    value = cfg.data_dir or os.environ.get("SPECKD_DATA_DIR")
    return Path(value).expanduser() if value else None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSON Lines file; a bad line fails naming the file and line number."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise UserError(f"{path}:{number}: expected a JSON object per line")
            row["_source"] = f"{path}:{number}"
            rows.append(row)
    return rows


def _hub_file(src: SplitSource) -> Path:
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(repo_id=src.hub_repo, filename=src.hub_file, repo_type="dataset"))


def load_rows(task: TaskSpec, split: str, cfg: DataConfig) -> list[dict[str, Any]]:
    """All rows of one split of a task, from the mirror when it has the file, else from the hub."""
    if split not in task.splits:
        raise UserError(f"task {task.name} has no {split!r} split (it has: {', '.join(task.splits)})")
    src = task.splits[split]
    base = mirror_dir(cfg)
    if base is not None and (base / src.mirror).is_file():
        rows = read_jsonl(base / src.mirror)
    else:
        where = f"mirror {base}" if base is not None else "no mirror (--data-dir / SPECKD_DATA_DIR unset)"
        if not src.hub_repo or not src.hub_file:
            raise UserError(
                f"task {task.name}: {src.mirror} not found ({where}) and the task has no hub source; "
                f"pass --data-dir DIR with DIR/{src.mirror}"
            )
        try:
            rows = read_jsonl(_hub_file(src))
        except UserError:
            raise
        except Exception as exc:  # offline, no such repo, auth: all mean the same to the user
            raise UserError(
                f"task {task.name}: {src.mirror} not found ({where}) and the hub download of "
                f"{src.hub_repo}/{src.hub_file} failed ({type(exc).__name__}); "
                f"pass --data-dir DIR (or set SPECKD_DATA_DIR) to a folder holding {src.mirror}"
            ) from None
    for row in rows:
        missing = [f for f in (task.reference_field,) if f not in row]
        try:
            task.render(row)
        except KeyError as exc:
            missing.append(str(exc.args[0]))
        if missing:
            raise UserError(f"{row['_source']}: row lacks field {missing[0]!r} required by task {task.name}")
    if not rows:
        raise UserError(f"task {task.name}: split {split} ({src.mirror}) has no rows")
    return rows


@dataclass
class Example:
    prompt_ids: list[int]
    target_ids: list[int]
    """Response tokens followed by EOS (possibly cut to fit max_length)."""
    prompt: str
    references: list[str]


def encode_prompt(tokenizer: Any, text: str, cfg: DataConfig) -> list[int]:
    """Prompt tokens, in the chat template when asked, keeping the last max_prompt_length tokens."""
    if cfg.chat_template:
        messages = [{"role": "user", "content": text}]
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)[
            "input_ids"
        ]
    else:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids[-cfg.max_prompt_length :]


def build_examples(
    task: TaskSpec, rows: list[dict[str, Any]], tokenizer: Any, cfg: DataConfig
) -> list[Example]:
    examples = []
    for row in rows:
        prompt = task.render(row)
        refs = task.references(row)
        prompt_ids = encode_prompt(tokenizer, prompt, cfg)
        response = tokenizer(refs[0], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        room = cfg.max_length - len(prompt_ids)
        examples.append(Example(prompt_ids, response[:room], prompt, refs))
    return examples


@dataclass
class Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor

    @property
    def n_targets(self) -> int:
        return int((self.labels != IGNORE).sum())

    def to(self, device: torch.device) -> Batch:
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device))


def collate(examples: list[Example], pad_id: int) -> Batch:
    """Right-padded batch with shifted labels over the response tokens only."""
    width = max(len(e.prompt_ids) + len(e.target_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, IGNORE)
    for i, ex in enumerate(examples):
        seq = ex.prompt_ids + ex.target_ids
        ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = 1
        start = len(ex.prompt_ids) - 1
        labels[i, start : start + len(ex.target_ids)] = torch.tensor(ex.target_ids)
    return Batch(ids, mask, labels)


def batch_order(examples: list[Example], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Seeded shuffle, length-grouped inside windows of 8 batches (less padding), batch order shuffled."""
    rng = random.Random(seed * 1000 + epoch)
    order = list(range(len(examples)))
    rng.shuffle(order)
    window = batch_size * 8
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(
            order[start : start + window],
            key=lambda i: len(examples[i].prompt_ids) + len(examples[i].target_ids),
        )
        batches.extend(chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches
