"""Rows -> prompts and targets -> token batches.

Labels are already shifted: labels[b, t] is the token that position t predicts, or -100 where the loss
must not count (prompt and padding). The EOS that ends every response is a target even when the
tokenizer's pad token is the EOS token.
"""

from __future__ import annotations

import dataclasses
import random
import re
import string
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from speckd_bench.caches import digest
from speckd_bench.config.run_config import DataConfig
from speckd_bench.data.tasks import TaskSpec
from speckd_bench.errors import UserError

IGNORE = -100


@dataclass
class Example:
    prompt_ids: list[int]
    target_ids: list[int]
    """Response tokens followed by EOS (possibly cut to fit max_length)."""
    prompt: str
    """The prompt text as the model reads it (the user message under data.chat_template), after any cut."""
    references: list[str]
    prompt_cut: bool = False
    """True when the prompt was shortened to fit data.max_prompt_length (see fit_prompt)."""

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_ids)


_SECTION = re.compile(r"^### [^\n]*:\n", re.MULTILINE)
"""A section header of an Alpaca-style template ('### Instruction:', '### Input:', '### Response:')."""


def chat_content(template: str) -> str:
    """The task's own content of an Alpaca-style template, for a chat template's user message: the bodies
    of its sections one blank line apart, without the preamble, the headers and the empty response
    section. A template without '### Name:' sections is returned unchanged."""
    parts = _SECTION.split(template)
    if len(parts) == 1:
        return template
    return "\n\n".join(body for part in parts[1:] if (body := part.strip("\n")))


def prompt_task(task: TaskSpec, cfg: DataConfig) -> TaskSpec:
    """The task whose render() gives the prompt text: its templates as written, or under the chat template
    their content only (the chat template brings its own turn structure)."""
    if not cfg.chat_template:
        return task
    with_input = task.prompt_with_input and chat_content(task.prompt_with_input)
    return dataclasses.replace(task, prompt=chat_content(task.prompt), prompt_with_input=with_input)


def template_fields(task: TaskSpec) -> list[str]:
    """The row fields the task's prompt templates fill in, in order of first use."""
    templates = [task.prompt, *([task.prompt_with_input] if task.prompt_with_input else [])]
    names = [n for t in templates for _, n, _, _ in string.Formatter().parse(t) if n]
    return list(dict.fromkeys(names))


def encode_prompt(tokenizer: Any, text: str, cfg: DataConfig) -> list[int]:
    """Prompt tokens: the text as the one user turn of the chat template when asked, else the text alone."""
    if not cfg.chat_template:
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    messages = [{"role": "user", "content": text}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"]


class Prompt(NamedTuple):
    text: str
    ids: list[int]
    cut: bool


def _capped(row: dict[str, Any], tokens: dict[str, list[int]], cap: int, tokenizer: Any) -> dict[str, Any]:
    """The row with every field of `tokens` cut to its first `cap` tokens (a split character dropped)."""
    cut = {
        name: tokenizer.decode(ids[:cap]).rstrip("\ufffd") for name, ids in tokens.items() if len(ids) > cap
    }
    return {**row, **cut}


def fit_prompt(task: TaskSpec, row: dict[str, Any], tokenizer: Any, cfg: DataConfig) -> Prompt:
    """The prompt of a row within data.max_prompt_length tokens. One over the limit is cut inside its
    fields, never in the template: every field keeps at most its first `cap` tokens, `cap` the largest
    that fits, so the chat header, the template's text and the start of every field survive."""
    limit = cfg.max_prompt_length

    def encoded(values: dict[str, Any], cut: bool) -> Prompt:
        text = task.render(values)
        return Prompt(text, encode_prompt(tokenizer, text, cfg), cut)

    whole = encoded(row, False)
    if len(whole.ids) <= limit:
        return whole
    fields = [name for name in template_fields(task) if row.get(name)]
    tokens = {name: tokenizer(str(row[name]), add_special_tokens=False)["input_ids"] for name in fields}
    best = encoded(_capped(row, tokens, 0, tokenizer), True)
    if len(best.ids) > limit:
        raise UserError(
            f"task {task.name}: the prompt template alone is {len(best.ids)} tokens, over "
            f"data.max_prompt_length={limit}; raise it"
        )
    low, high = 0, max(map(len, tokens.values())) - 1
    while low < high:
        cap = (low + high + 1) // 2
        candidate = encoded(_capped(row, tokens, cap, tokenizer), True)
        if len(candidate.ids) <= limit:
            low, best = cap, candidate
        else:
            high = cap - 1
    return best


def build_examples(
    task: TaskSpec, rows: list[dict[str, Any]], tokenizer: Any, cfg: DataConfig
) -> list[Example]:
    examples = []
    shown = prompt_task(task, cfg)
    for row in rows:
        prompt = fit_prompt(shown, row, tokenizer, cfg)
        response = tokenizer(task.target(row), add_special_tokens=False)["input_ids"] + [
            tokenizer.eos_token_id
        ]
        room = cfg.max_length - len(prompt.ids)
        examples.append(Example(prompt.ids, response[:room], prompt.text, task.references(row), prompt.cut))
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
