"""Batched decoding for evaluation: length-sorted, left-padded batches, decoded by one of two backends.

`eval.backend`:
- dynamic: transformers generate with its dynamic KV cache.
- static: greedy decoding on a transformers StaticCache kept per shape bucket (batch rows padded to
  eval.batch_size with copies of a real row, cache length rounded up to a multiple of BUCKET). The prompt is
  prefilled eagerly; the single-token step is compiled on CUDA (torch.compile with CUDA graphs) once per
  bucket and reused by every later batch, eval set and seed in the process. The loop only checks for EOS every
  CHECK_EVERY steps, so the GPU never waits for the host between steps. In float32 its greedy outputs equal
  transformers generate's on the same inputs (tested on CPU); in bfloat16 on a GPU, other kernels can flip
  near-ties, so rows may differ (docs/performance.md). Sampling and no_repeat_ngram_size decode through the
  dynamic path.
- auto: dynamic on every device. It stays so until static's greedy outputs are shown to match the dynamic
  cache's on a trained model on a GPU (`speckd-bench bench decode-parity`); static is opt-in until then.
"""

from __future__ import annotations

import functools
import inspect
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from transformers import StaticCache

from speckd_bench.config.run_config import EvalConfig
from speckd_bench.progress import progress_bar

BUCKET = 64
"""Static cache lengths are multiples of this, so one compiled step serves many prompt widths."""
CHECK_EVERY = 16
"""Decode steps between checks whether every row has emitted EOS (each check waits for the device)."""


@dataclass
class Generations:
    texts: list[str]
    """One output per prompt, in the prompts' order: special tokens dropped, whitespace stripped."""
    raw: list[str]
    """The same outputs as decoded, special tokens (EOS) and whitespace kept: what the model emitted."""
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


def resolve_backend(backend: str) -> str:
    """`auto` -> dynamic (transformers generate) on every device; other names stay as they are."""
    return "dynamic" if backend == "auto" else backend


def cut_at_eos(tokens: list[int], eos_id: int | None) -> list[int]:
    """The tokens up to and including the first EOS (all of them when there is none)."""
    return tokens[: tokens.index(eos_id) + 1] if eos_id in tokens else tokens


def cache_kwarg(model: Any) -> str:
    """The name of the forward's KV-cache argument: `cache` (transformers >= 5.18) or `past_key_values`."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def prompt_positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids of left-padded prompts, as transformers generate derives them (pads at 1)."""
    return (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)


@torch.no_grad()
def decode(
    model: Any,
    prompts: list[list[int]],
    cfg: EvalConfig,
    seed: int,
    pad_id: int,
    eos_id: int | None,
    label: str = "decoding",
    quiet: bool = True,
) -> list[list[int]]:
    """New token ids of every prompt through its first EOS, in the prompts' order; eos_id None decodes
    eval.max_new_tokens for every prompt."""
    model.eval()
    backend = resolve_backend(cfg.backend)
    torch.manual_seed(seed)
    fast = backend == "static" and cfg.decoding == "greedy" and not cfg.no_repeat_ngram_size
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    batches = [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
    outputs: list[list[int]] = [[] for _ in prompts]
    with progress_bar(label, len(batches), quiet) as bar:
        for idx in batches:
            batch = [prompts[i] for i in idx]
            if fast:
                new = _decode_static(model, batch, cfg.batch_size, cfg.max_new_tokens, pad_id, eos_id)
            else:
                new = _decode_transformers(model, batch, cfg, pad_id, eos_id)
            for i, tokens in zip(idx, new, strict=True):
                outputs[i] = cut_at_eos(tokens, eos_id)
            bar.advance()
    return outputs


def generate(
    model: Any, tokenizer: Any, prompts: list[list[int]], cfg: EvalConfig, seed: int, label: str, quiet: bool
) -> Generations:
    """Decode every prompt and detokenise: the cleaned text (special tokens dropped, whitespace stripped)
    and the raw continuation (special tokens kept)."""
    start = time.perf_counter()
    outputs = decode(model, prompts, cfg, seed, tokenizer.pad_token_id, tokenizer.eos_token_id, label, quiet)
    texts = [tokenizer.decode(tokens, skip_special_tokens=True).strip() for tokens in outputs]
    raw = [tokenizer.decode(tokens, skip_special_tokens=False) for tokens in outputs]
    return Generations(texts, raw, sum(len(t) for t in outputs), time.perf_counter() - start)


def _decode_transformers(
    model: Any, prompts: list[list[int]], cfg: EvalConfig, pad_id: int, eos_id: int | None
) -> list[list[int]]:
    """One batch through transformers generate (dynamic cache)."""
    sample = cfg.decoding == "sample"
    options: dict[str, Any] = {
        "max_new_tokens": cfg.max_new_tokens,
        "do_sample": sample,
        "pad_token_id": pad_id,
        "eos_token_id": eos_id,
    }
    if sample:
        options.update(temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k)
    else:
        options.update(temperature=None, top_p=None, top_k=None)
    if cfg.no_repeat_ngram_size:
        options["no_repeat_ngram_size"] = cfg.no_repeat_ngram_size
    device = next(model.parameters()).device
    ids, mask = left_pad(prompts, pad_id)
    out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **options)
    return out[:, ids.shape[1] :].tolist()


# --- static backend -------------------------------------------------------------------------------------


@dataclass
class _Bucket:
    """A StaticCache of one (batch rows, cache length) shape and the names the model's forward takes."""

    cache: Any
    cache_arg: str
    logits_to_keep: bool


_BUCKETS: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], _Bucket]] = weakref.WeakKeyDictionary()
_BUILT = [0]


def buckets_built() -> int:
    """Static-cache buckets built in this process; on CUDA each is one compilation of the decode step."""
    return _BUILT[0]


def _bucket(model: Any, rows: int, length: int) -> _Bucket:
    per_model = _BUCKETS.setdefault(model, {})
    weights = next(model.parameters())
    key = (rows, length, weights.dtype, weights.device)  # a model cast or moved in place gets new caches
    if key not in per_model:
        params = inspect.signature(model.forward).parameters
        per_model[key] = _Bucket(
            cache=StaticCache(config=model.config, max_cache_len=length),
            cache_arg=cache_kwarg(model),
            logits_to_keep="logits_to_keep" in params,
        )
        _BUILT[0] += 1
    return per_model[key]


def _greedy_step(
    model: Any,
    cache: Any,
    cache_arg: str,
    tokens: torch.Tensor,
    positions: torch.Tensor,
    mask: torch.Tensor,
) -> torch.Tensor:
    """Feed one token per row, append its keys and values to the static cache, return the argmax tokens."""
    inputs = {"input_ids": tokens, "attention_mask": mask, "position_ids": positions, cache_arg: cache}
    return model(**inputs, use_cache=True).logits[:, -1].argmax(-1)


@functools.cache
def _compiled_step() -> Callable[..., torch.Tensor]:
    """One compiled step for the process; dynamo specialises it per bucket shape (dynamic=False), CUDA graphs
    (mode reduce-overhead) replay it without per-kernel launch cost. Dynamo keeps at most
    torch._dynamo.config.recompile_limit (8) shapes of it; later buckets would run uncompiled."""
    return torch.compile(_greedy_step, mode="reduce-overhead", dynamic=False)


def _decode_static(
    model: Any, prompts: list[list[int]], rows: int, max_new_tokens: int, pad_id: int, eos_id: int | None
) -> list[list[int]]:
    """Greedy new tokens of one batch (at most `rows` prompts), up to max_new_tokens each."""
    n = len(prompts)
    device = next(model.parameters()).device
    ids, prompt_mask = left_pad(prompts + [prompts[0]] * (rows - n), pad_id)
    ids, prompt_mask = ids.to(device), prompt_mask.to(device)
    width = ids.shape[1]
    length = -(-(width + max_new_tokens) // BUCKET) * BUCKET
    bucket = _bucket(model, rows, length)
    cache = bucket.cache
    cache.reset()
    mask = torch.ones(rows, length, dtype=torch.long, device=device)
    mask[:, :width] = prompt_mask
    positions = prompt_positions(prompt_mask)
    inputs = {"input_ids": ids, "attention_mask": mask, "position_ids": positions, bucket.cache_arg: cache}
    if bucket.logits_to_keep:
        inputs["logits_to_keep"] = 1
    logits = model(**inputs, use_cache=True).logits
    out = torch.empty(rows, max_new_tokens, dtype=torch.long, device=device)
    out[:, 0] = logits[:, -1].argmax(-1)
    del logits
    done = out[:, 0] == eos_id if eos_id is not None else torch.zeros(rows, dtype=torch.bool, device=device)
    tokens = out[:, :1].clone()
    positions = prompt_mask.sum(-1, keepdim=True)
    compiled = device.type == "cuda"
    step = _compiled_step() if compiled else _greedy_step
    steps = 1
    while steps < max_new_tokens:
        if eos_id is not None and steps % CHECK_EVERY == 0 and bool(done[:n].all()):
            break
        if compiled:
            torch.compiler.cudagraph_mark_step_begin()
        token = step(model, cache, bucket.cache_arg, tokens, positions, mask)
        out[:, steps] = token
        tokens.copy_(token[:, None])
        positions += 1
        if eos_id is not None:
            done |= token == eos_id
        steps += 1
    return out[:n, :steps].tolist()
