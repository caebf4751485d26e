"""Evaluation decoding benchmark: transformers generate with its dynamic cache, transformers generate with
its static cache (which transformers compiles on CUDA), and ours (generate.decode, eval.backend=static),
greedy, on one random-init model in one process. The compiled variants run twice on the same prompts: the
first call includes compilation, the second is the steady state; the dynamic cache has nothing to compile and
runs once (after a warm-up forward), so its two columns are one measurement. Outputs are compared, row by
row, with the dynamic cache's and with transformers' static cache's.

Sizes: small (tiny Llama, float32, seconds on a CPU) and qwen (Qwen2.5-0.5B shapes, bfloat16, batch 64, 128
random prompt tokens, 256 new tokens, no EOS so every row decodes the full length).

    python -m speckd_bench.benchmarks.generate --device cuda --size qwen
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import transformers
from transformers import AutoModelForCausalLM, LlamaConfig, PretrainedConfig

from speckd_bench.benchmarks.common import machine, qwen25_config, timed_decode
from speckd_bench.config.run_config import EvalConfig
from speckd_bench.errors import UserError
from speckd_bench.evaluation.generate import decode


@dataclass(frozen=True)
class Size:
    config: Callable[[], PretrainedConfig]
    batch: int
    prompt_tokens: int
    new_tokens: int
    dtype: torch.dtype


SIZES = {
    "small": Size(
        lambda: LlamaConfig(
            vocab_size=256,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
        ),
        batch=8,
        prompt_tokens=16,
        new_tokens=32,
        dtype=torch.float32,
    ),
    "qwen": Size(  # Qwen2.5-0.5B
        lambda: qwen25_config("0.5b"),
        batch=64,
        prompt_tokens=128,
        new_tokens=256,
        dtype=torch.bfloat16,
    ),
}


def _same_rows(a: list[list[int]], b: list[list[int]]) -> str:
    return f"{sum(x == y for x, y in zip(a, b, strict=True))}/{len(a)}"


def main(device: str, size: str) -> list[dict[str, Any]]:
    """One row per variant: first-call and steady-state seconds, new tokens/s, rows identical to dynamic."""
    if size not in SIZES:
        raise UserError(f"unknown benchmark size {size!r}; known: {', '.join(SIZES)}")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda, but torch sees no CUDA device; use --device cpu --size small")
    spec = SIZES[size]
    config = spec.config()
    config.eos_token_id = None  # no row may stop early
    torch.manual_seed(0)
    with dev:
        model = AutoModelForCausalLM.from_config(config, dtype=spec.dtype).eval()
    model.generation_config.eos_token_id = None
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, config.vocab_size, (spec.batch, spec.prompt_tokens), generator=g)
    prompts = ids.tolist()
    ids, mask = ids.to(dev), torch.ones_like(ids, device=dev)
    options = {
        "max_new_tokens": spec.new_tokens,
        "do_sample": False,
        "temperature": None,
        "top_p": None,
        "top_k": None,
        "pad_token_id": 0,
    }

    def transformers_generate(**cache: str) -> Callable[[], list[list[int]]]:
        def call() -> list[list[int]]:
            out = model.generate(input_ids=ids, attention_mask=mask, **options, **cache)
            return out[:, spec.prompt_tokens :].tolist()

        return call

    ours = EvalConfig(max_new_tokens=spec.new_tokens, batch_size=spec.batch, backend="static")
    compiled = dev.type == "cuda"
    with torch.no_grad():
        model(input_ids=ids[:, :8])  # device and library start-up, outside every timing
    variants = [
        ("transformers dynamic", False, transformers_generate()),
        ("transformers static", compiled, transformers_generate(cache_implementation="static")),
        ("ours (static)", compiled, lambda: decode(model, prompts, ours, seed=0, pad_id=0, eos_id=None)),
    ]
    environment = {
        "size": size,
        "batch": spec.batch,
        "prompt_tokens": spec.prompt_tokens,
        "new_tokens": spec.new_tokens,
        "dtype": str(spec.dtype).removeprefix("torch."),
        "machine": machine(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    rows: list[dict[str, Any]] = []
    outputs: list[list[list[int]]] = []
    for name, is_compiled, call in variants:
        out, first = timed_decode(call, dev)
        out, steady = timed_decode(call, dev) if is_compiled else (out, first)
        outputs.append(out)
        new_tokens = sum(len(r) for r in out)
        row = {
            "variant": name,
            "compiled": is_compiled,
            "first_call_s": round(first, 3),
            "steady_s": round(steady, 3),
            "new_tokens_per_s": round(new_tokens / steady, 1),
            "identical": _same_rows(out, outputs[0]),
            "identical_to_static": _same_rows(out, outputs[1]) if len(outputs) > 1 else "",
            **environment,
        }
        print(f"{name}: {row['new_tokens_per_s']:,.0f} new tok/s, first call {first:.1f} s", file=sys.stderr)
        rows.append(row)
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """A header naming the shapes, machine and versions, then one markdown row per variant."""
    env = rows[0]
    lines = [
        f"Evaluation decoding, greedy, size {env['size']}: batch {env['batch']}, "
        f"{env['prompt_tokens']} prompt tokens, {env['new_tokens']} new tokens, {env['dtype']}; "
        f"{env['machine']}; torch {env['torch']}, transformers {env['transformers']}",
        "",
        "| variant | compiled | first call s | steady s | new tok/s | rows = dynamic | rows = static |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {'yes' if r['compiled'] else 'no'} | {r['first_call_s']:.2f} | "
            f"{r['steady_s']:.2f} | {r['new_tokens_per_s']:,.0f} | {r['identical']} | "
            f"{r['identical_to_static'] or '-'} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", default="small", choices=sorted(SIZES))
    args = parser.parse_args()
    try:
        print(format_table(main(args.device, args.size)))
    except UserError as exc:
        sys.exit(f"error: {exc}")
