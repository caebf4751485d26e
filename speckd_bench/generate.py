"""Batched decoding for evaluation: length-sorted, left-padded batches through transformers generate."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from speckd_bench.config import EvalConfig
from speckd_bench.progress import progress_bar


@dataclass
class Generations:
    texts: list[str]
    """One output per prompt, in the prompts' order."""
    new_tokens: int
    seconds: float


def left_pad(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded input ids and attention mask, the layout decoder-only generation needs."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(prompt)
        mask[row, width - len(prompt) :] = 1
    return ids, mask


@torch.no_grad()
def generate(
    model: Any, tokenizer: Any, prompts: list[list[int]], cfg: EvalConfig, seed: int, label: str, quiet: bool
) -> Generations:
    device = next(model.parameters()).device
    model.eval()
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    texts: list[str] = [""] * len(prompts)
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    sample = cfg.decoding == "sample"
    options: dict[str, Any] = {
        "max_new_tokens": cfg.max_new_tokens,
        "do_sample": sample,
        "pad_token_id": pad,
        "eos_token_id": eos,
    }
    if sample:
        options.update(temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k)
    else:
        options.update(temperature=None, top_p=None, top_k=None)
    if cfg.no_repeat_ngram_size:
        options["no_repeat_ngram_size"] = cfg.no_repeat_ngram_size
    torch.manual_seed(seed)
    new_tokens = 0
    start = time.perf_counter()
    batches = [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
    with progress_bar(label, len(batches), quiet) as bar:
        for idx in batches:
            ids, mask = left_pad([prompts[i] for i in idx], pad)
            width = ids.shape[1]
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **options)[
                :, width:
            ]
            for row, i in enumerate(idx):
                tokens = out[row].tolist()
                if eos in tokens:
                    tokens = tokens[: tokens.index(eos) + 1]
                new_tokens += len(tokens)
                texts[i] = tokenizer.decode(tokens, skip_special_tokens=True).strip()
            bar.advance()
    return Generations(texts, new_tokens, time.perf_counter() - start)
