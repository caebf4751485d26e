"""Rows -> prompts and targets -> token batches.

Labels are already shifted: labels[b, t] is the token that position t predicts, or -100 where the loss
must not count (prompt and padding). The EOS that ends every response is a target even when the
tokenizer's pad token is the EOS token.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import torch

from speckd_bench.caches import digest
from speckd_bench.config.run_config import DataConfig
from speckd_bench.data.tasks import TaskSpec

IGNORE = -100


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
        target = task.target(row)
        response = tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
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


def examples_digest(examples: list[Example]) -> str:
    """The exact token ids and references of a list of examples, in order: covers the data file, the
    rows taken, the prompt template and format, the tokenizer and every length limit at once."""
    return digest([[e.prompt_ids, e.target_ids, e.references] for e in examples])
