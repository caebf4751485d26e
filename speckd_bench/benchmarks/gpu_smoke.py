"""GPU smoke check: random-init models of the GPU presets' shapes, 20 optimiser steps of speckd and fkl
through the harness's own Trainer (trainer.Trainer -> accumulate -> loss.objective), one batched evaluation
decoding pass of the qwen student, printing ms/step, tokens/s and peak memory per phase, and the time
and memory per 1k steps each preset needs (the README's 'Several GPUs' table).

    speckd-bench bench gpu-smoke            # on a CUDA machine; a few minutes on one H100
    speckd-bench bench gpu-smoke --small    # tiny shapes on the CPU: checks the script itself
    python -m speckd_bench.benchmarks.gpu_smoke [--small]   # the same, where the CLI's extras are missing

Needs only torch and transformers (no downloads: configs are built here, batches are synthetic token
ids, the tokenizer is a stand-in that decodes ids to numbers).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2ForCausalLM,
)

from speckd_bench.api.methods import METHODS
from speckd_bench.benchmarks.common import qwen25_config
from speckd_bench.config.run_config import EvalConfig, build_config
from speckd_bench.data.examples import Example
from speckd_bench.engine.trainer import Stage, Trainer
from speckd_bench.errors import UserError
from speckd_bench.evaluation.generate import generate
from speckd_bench.loss.objective import LiveTeacher
from speckd_bench.methods.discovery import discover_methods, method_config

FORBIDDEN = ("gguf", "rouge_score", "datasets", "lm_eval")
"""Not installed where this runs (a bare GPU machine): none of the modules above may import them."""

GIB = 2**30


def gpt2(embd: int, layers: int, heads: int) -> tuple[type, Any]:
    cfg = GPT2Config(vocab_size=50257, n_embd=embd, n_layer=layers, n_head=heads, n_positions=1024)
    return GPT2LMHeadModel, cfg


def llama(hidden: int, inter: int, layers: int, heads: int, kv: int) -> tuple[type, Any]:
    cfg = LlamaConfig(
        vocab_size=128256, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=8192,
        rope_theta=500_000.0, tie_word_embeddings=True, eos_token_id=128001, pad_token_id=128001,
    )  # fmt: skip
    return LlamaForCausalLM, cfg


# preset -> (teacher, student) with the hub models' real shapes
PAIRS = {
    "qwen2.5-1.5b-to-0.5b": (
        (Qwen2ForCausalLM, qwen25_config("1.5b")),
        (Qwen2ForCausalLM, qwen25_config("0.5b")),
    ),
    "minillm-gpt2": (gpt2(1600, 48, 25), gpt2(768, 12, 12)),
    "llama (3.2-3B -> 3.2-1B shapes)": (llama(3072, 8192, 28, 24, 8), llama(2048, 8192, 16, 32, 8)),
}


def small_pairs() -> dict[str, tuple[tuple[type, Any], tuple[type, Any]]]:
    def tiny(kind: tuple[type, Any], layers: int) -> tuple[type, Any]:
        cls, cfg = kind
        ids = {k: 511 for k in ("bos_token_id", "eos_token_id", "pad_token_id") if getattr(cfg, k, None)}
        cfg = cfg.__class__(**{**cfg.to_dict(), "vocab_size": 512, **ids})
        for name, value in (("hidden_size", 32), ("n_embd", 32), ("intermediate_size", 64)):
            if hasattr(cfg, name):
                setattr(cfg, name, value)
        for name in ("num_hidden_layers", "n_layer"):
            if hasattr(cfg, name):
                setattr(cfg, name, layers)
        for name in ("num_attention_heads", "n_head", "num_key_value_heads"):
            if hasattr(cfg, name):
                setattr(cfg, name, 2)
        if hasattr(cfg, "layer_types"):
            cfg.layer_types = cfg.layer_types[:layers]
        return cls, cfg

    return {name: (tiny(t, 2), tiny(s, 1)) for name, (t, s) in PAIRS.items()}


class IdTokenizer:
    """What generate() needs of a tokenizer, without files: ids decode to space-separated numbers."""

    def __init__(self, eos: int) -> None:
        self.pad_token_id = self.eos_token_id = eos

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return " ".join(str(i) for i in ids if not (skip_special_tokens and i == self.eos_token_id))


def examples(n: int, prompt_len: int, target_len: int, vocab: int, eos: int) -> list[Example]:
    """Synthetic rows: random prompt and response ids (the response ends with EOS), fixed lengths."""
    rng = random.Random(0)
    rows = []
    for _ in range(n):
        prompt = [rng.randrange(vocab - 1) for _ in range(prompt_len)]
        target = [rng.randrange(vocab - 1) for _ in range(target_len - 1)] + [eos]
        rows.append(Example(prompt, target, "", []))
    return rows


def build(kind: tuple[type, Any], device: torch.device, dtype: torch.dtype) -> Any:
    cls, cfg = kind
    torch.manual_seed(0)
    with device:
        return cls(cfg).to(dtype)


def peak_gib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else float("nan")


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def train_phase(name: str, pair: tuple[Any, Any], method: str, rows: list[Example], args: Any) -> dict:
    """`steps` optimiser steps of `method` through the Trainer; ms/step is the median after 2 steps."""
    teacher, student = pair
    cfg = build_config(method=method, preset="tiny", method_config=method_config)
    cfg.train.batch_size, cfg.train.max_steps, cfg.train.warmup_ratio = args.batch, args.steps, 0.0
    vocab = student.get_output_embeddings().weight.shape[0]
    device = next(student.parameters()).device
    reset_peak(device)
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "log.jsonl"
        stage = Stage(METHODS.get(method), cfg.method, cfg.train, 1e-5, 1, 1, method)
        trainer = Trainer(
            stage, student, LiveTeacher(teacher), rows, vocab_size=vocab, pad_id=rows[0].target_ids[-1]
        )
        result = trainer.fit(log, quiet=True)
        steps = [json.loads(line) for line in log.read_text().splitlines()]
    ms = statistics.median(r["seconds"] for r in steps[2:] or steps) * 1000
    tok_s = statistics.median(r["tokens_per_s"] for r in steps[2:] or steps)
    return {
        "pair": name, "phase": f"train {method}", "ms_per_step": ms, "tokens_per_s": tok_s,
        "peak_gib": peak_gib(device), "min_per_1k_steps": ms * 1000 / 60_000, "steps": result.steps,
    }  # fmt: skip


def eval_phase(name: str, student: Any, rows: list[Example], args: Any) -> dict:
    """One evaluation decoding pass (harness generate(): length-sorted left-padded batches)."""
    device = next(student.parameters()).device
    eos = rows[0].target_ids[-1]
    cfg = EvalConfig(max_new_tokens=args.new_tokens, batch_size=args.eval_batch)
    reset_peak(device)
    gen = generate(student, IdTokenizer(eos), [r.prompt_ids for r in rows], cfg, 10, "eval", True)
    return {
        "pair": name, "phase": "eval decode", "ms_per_step": float("nan"),
        "tokens_per_s": gen.new_tokens / gen.seconds, "peak_gib": peak_gib(device),
        "min_per_1k_steps": float("nan"), "steps": 0, "seconds": gen.seconds,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny shapes on the CPU (checks the script)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prompt-len", type=int, default=256)
    parser.add_argument("--target-len", type=int, default=256)
    parser.add_argument("--eval-prompts", type=int, default=64)
    parser.add_argument("--eval-batch", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--pairs", nargs="*", default=list(PAIRS), help="presets to time (default: all)")
    args = parser.parse_args(argv)
    if args.small:
        args.steps, args.batch, args.prompt_len, args.target_len = 3, 2, 8, 8
        args.eval_prompts, args.eval_batch, args.new_tokens = 4, 2, 4
        pairs, device, dtype = small_pairs(), torch.device("cpu"), torch.float32
    elif not torch.cuda.is_available():
        raise UserError(
            "gpu-smoke: no CUDA device here; run it on a GPU machine, or pass --small for a CPU check"
        )
    else:
        pairs, device, dtype = PAIRS, torch.device("cuda"), torch.bfloat16
    discover_methods()
    results = []
    t0 = time.perf_counter()
    for name in args.pairs:
        t_kind, s_kind = pairs[name]
        teacher = build(t_kind, device, dtype).eval().requires_grad_(False)
        student = build(s_kind, device, torch.float32)
        vocab, eos = s_kind[1].vocab_size, s_kind[1].eos_token_id
        eos = vocab - 1 if eos is None or eos >= vocab else eos
        rows = examples(args.batch * args.steps, args.prompt_len, args.target_len, vocab, eos)
        print(f"{name}: teacher {sum(p.numel() for p in teacher.parameters()) / 1e9:.2f}B, student "
              f"{sum(p.numel() for p in student.parameters()) / 1e9:.2f}B params, batch {args.batch} x "
              f"{args.prompt_len + args.target_len} tokens", flush=True)  # fmt: skip
        for method in ("speckd", "fkl"):
            results.append(train_phase(name, (teacher, student), method, rows, args))
            print(_line(results[-1]), flush=True)
        if name == next(iter(args.pairs)):
            prompts = examples(args.eval_prompts, args.prompt_len, 1, vocab, eos)
            results.append(eval_phase(name, student, prompts, args))
            print(_line(results[-1]), flush=True)
        del teacher, student
        if device.type == "cuda":
            torch.cuda.empty_cache()
    gpu = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    print(f"\nREADME table rows ({gpu}, bf16 teacher, fp32 student + AdamW, batch {args.batch} x "
          f"{args.prompt_len + args.target_len} tokens):")  # fmt: skip
    for r in results:
        if r["phase"].startswith("train"):
            print(f"| {r['pair']} | {r['phase'][6:]} | {r['ms_per_step']:.0f} | {r['min_per_1k_steps']:.1f} "
                  f"| {r['peak_gib']:.1f} | {gpu} |")  # fmt: skip
    print(f"total {time.perf_counter() - t0:.0f} s")
    return results


def _line(r: dict) -> str:
    if r["phase"] == "eval decode":
        return (
            f"  eval decode: {r['tokens_per_s']:.0f} new tok/s, {r['seconds']:.1f} s, "
            f"peak {r['peak_gib']:.1f} GiB"
        )
    return (
        f"  {r['phase']}: {r['ms_per_step']:.0f} ms/step, {r['tokens_per_s']:.0f} tok/s, "
        f"peak {r['peak_gib']:.1f} GiB, {r['min_per_1k_steps']:.1f} min per 1k steps"
    )


if __name__ == "__main__":
    try:
        main()
    except UserError as exc:
        sys.exit(f"error: {exc}")
