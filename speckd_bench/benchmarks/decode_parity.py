"""Greedy decoding parity on a trained model: our static-cache decoder against transformers generate (dynamic
cache), in float32 and bfloat16, through generate.decode (the code evaluation runs).

A random-init student is trained in the same process (plain SFT: AdamW, cross-entropy, short linear warm-up,
gradients clipped at 1) on a synthetic task, a fixed random second-order Markov chain: every token has
CANDIDATES possible successors; their logits are a fixed random base (scale SPREAD) plus what the token
before it favours (scale CONTEXT), so the next token depends on the last two tokens (a trained model must
read the cache at the right positions) and the chain's own top next-token probability is about 0.75 on
average, with about 3-5% of positions within 0.05 of a tie: peaked like a trained LM's, near-ties included.
Held-out prompts of that chain, of varied lengths, are decoded in left-padded batches by both backends, no
EOS (every row decodes the full length); each backend runs twice (first call, with compilation on CUDA; then
the steady state). Needs only torch and transformers: no downloads, no data files.

    python -m speckd_bench.benchmarks.decode_parity --size smollm2-student   # GPU
    speckd-bench bench decode-parity --size small --device cpu               # seconds on a CPU
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from transformers import AutoModelForCausalLM, PretrainedConfig

from speckd_bench.benchmarks.common import (
    llama_config,
    machine_header,
    markdown_table,
    qwen25_config,
    timed_decode,
)
from speckd_bench.config.run_config import EvalConfig
from speckd_bench.evaluation.generate import decode

CANDIDATES = 4
"""Possible successors of every chain token."""
SPREAD = 2.0
"""Standard deviation of the successors' base logits: larger is more peaked."""
CONTEXT = 2.0
"""Standard deviation of what the token before the last adds to the successors' logits."""
TRAITS = 8
"""Dimensions of the random traits through which a token favours some successors of the next one."""
PAD = 0
"""Left-padding id; the chain's tokens are 1..chain_vocab."""
PREFIX = 20
"""The parity table also compares each row's first PREFIX new tokens."""


@dataclass(frozen=True)
class Size:
    config: Callable[[], PretrainedConfig]
    steps: int
    """Default training steps."""
    lr: float
    batch: int
    """Training sequences per step."""
    seq: int
    """Training sequence length (covers the longest prompt plus the new tokens)."""
    chain_vocab: int
    prompts: int
    prompt_lengths: tuple[int, int]
    new_tokens: int
    eval_batch: int


_GPU_EVAL = {"prompts": 64, "prompt_lengths": (16, 64), "new_tokens": 64, "eval_batch": 32}
SIZES = {
    "small": Size(
        lambda: llama_config(64, 2, 4, 2, 256, 512),
        steps=100,
        lr=1e-2,
        batch=32,
        seq=48,
        chain_vocab=511,
        prompts=32,
        prompt_lengths=(4, 16),
        new_tokens=32,
        eval_batch=16,
    ),
    # the default student's shapes (SmolLM2-135M's, 6 layers)
    "smollm2-student": Size(
        lambda: llama_config(576, 6, 9, 3, 1536, 49152),
        steps=300,
        lr=1e-3,
        batch=32,
        seq=128,
        chain_vocab=2048,
        **_GPU_EVAL,
    ),
    "qwen-0.5b": Size(
        lambda: qwen25_config("0.5b"),
        steps=300,
        lr=5e-4,
        batch=32,
        seq=128,
        chain_vocab=2048,
        **_GPU_EVAL,
    ),
}


@dataclass(frozen=True)
class Chain:
    successors: torch.Tensor
    """[chain_vocab, CANDIDATES] token ids (1..chain_vocab) that may follow token id row + 1."""
    base: torch.Tensor
    """[chain_vocab, CANDIDATES] their logits."""
    prefers: torch.Tensor
    """[chain_vocab, TRAITS]: the traits each token favours two positions later."""
    traits: torch.Tensor
    """[chain_vocab, TRAITS]: each token's traits; a successor gains prefers[before] . traits[successor]."""

    @classmethod
    def random(cls, chain_vocab: int, seed: int = 0) -> Chain:
        g = torch.Generator().manual_seed(seed)
        successors = torch.rand(chain_vocab, chain_vocab, generator=g).argsort(-1)[:, :CANDIDATES] + 1
        base = torch.randn(chain_vocab, CANDIDATES, generator=g) * SPREAD
        prefers = torch.randn(chain_vocab, TRAITS, generator=g) * CONTEXT / TRAITS**0.5
        traits = torch.randn(chain_vocab, TRAITS, generator=g)
        return cls(successors, base, prefers, traits)

    def next_probs(self, before: torch.Tensor | None, last: torch.Tensor) -> torch.Tensor:
        """[..., CANDIDATES] probabilities of last's successors, given the token before it (None: none)."""
        logits = self.base[last - 1]
        if before is not None:
            cand = self.traits[self.successors[last - 1] - 1]
            logits = logits + (self.prefers[before - 1].unsqueeze(-2) * cand).sum(-1)
        return logits.softmax(-1)

    def sample(self, n: int, length: int, generator: torch.Generator) -> torch.Tensor:
        """n sequences: a uniform first token, then successors drawn by inverse CDF."""
        x = torch.empty(n, length, dtype=torch.long)
        x[:, 0] = torch.randint(1, self.successors.shape[0] + 1, (n,), generator=generator)
        uniform = torch.rand(n, length, 1, generator=generator)
        for i in range(1, length):
            cdf = self.next_probs(x[:, i - 2] if i > 1 else None, x[:, i - 1]).cumsum(-1)
            pick = (uniform[:, i] > cdf).sum(-1).clamp(max=CANDIDATES - 1)
            x[:, i] = self.successors[x[:, i - 1] - 1, pick]
        return x


def train(model: Any, chain: Chain, spec: Size, steps: int, device: torch.device) -> list[float]:
    """Plain SFT on fresh chain sequences (every token after the first is a target); each step's loss."""
    data = chain.sample(steps * spec.batch, spec.seq, torch.Generator().manual_seed(1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr)
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    model.train()
    losses = []
    for ids in data.split(spec.batch):
        ids = ids.to(device)
        with autocast:
            loss = model(input_ids=ids, labels=ids).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    model.eval()
    return losses


@torch.no_grad()
def peakedness(model: Any, chain: Chain, spec: Size, device: torch.device) -> dict[str, float]:
    """On held-out chain sequences: the model's mean top next-token probability, the chain's own, the share
    of positions where the model's top two are within 0.05, and the chain's entropy (the loss floor)."""
    ids = chain.sample(spec.prompts, spec.seq, torch.Generator().manual_seed(2))
    probs = model(input_ids=ids.to(device)).logits[:, :-1].float().softmax(-1)
    top = probs.topk(2).values
    own = torch.cat([chain.next_probs(None, ids[:, :1]), chain.next_probs(ids[:, :-2], ids[:, 1:-1])], 1)
    return {
        "max_prob": top[..., 0].mean().item(),
        "chain_max_prob": own.max(-1).values.mean().item(),
        "near_ties": (top[..., 0] - top[..., 1] < 0.05).float().mean().item(),
        "entropy": -(own * own.log()).sum(-1).mean().item(),
    }


def held_out_prompts(chain: Chain, spec: Size) -> list[list[int]]:
    """Chain prefixes of lengths drawn uniformly from spec.prompt_lengths (a seed training never uses)."""
    g = torch.Generator().manual_seed(3)
    low, high = spec.prompt_lengths
    rows = chain.sample(spec.prompts, high, g).tolist()
    lengths = torch.randint(low, high + 1, (spec.prompts,), generator=g).tolist()
    return [row[:k] for row, k in zip(rows, lengths, strict=True)]


def compare(reference: list[list[int]], other: list[list[int]]) -> dict[str, Any]:
    """Rows identical, rows whose first PREFIX tokens are identical, mean first differing token (1-based)."""
    firsts = [
        next((i + 1 for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), None)
        for a, b in zip(reference, other, strict=True)
    ]
    differ = [f for f in firsts if f is not None]
    n = len(reference)
    return {
        "identical": f"{n - len(differ)}/{n}",
        "prefix_identical": f"{sum(f > PREFIX for f in differ) + n - len(differ)}/{n}",
        "first_difference": sum(differ) / len(differ) if differ else float("nan"),
    }


def main(size: str, device: str = "auto", steps: int | None = None) -> tuple[list[dict], dict[str, Any]]:
    """(one row per dtype: parity of static with dynamic and both backends' times, the facts of the run)."""
    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    spec = SIZES[size]
    steps = spec.steps if steps is None else steps
    config = spec.config()
    config.eos_token_id = None  # no row may stop early
    config.pad_token_id = PAD
    torch.manual_seed(0)
    with dev:
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config.eos_token_id = None
    chain = Chain.random(spec.chain_vocab)
    start = time.perf_counter()
    losses = train(model, chain, spec, steps, dev)
    train_s = time.perf_counter() - start
    peaked = peakedness(model, chain, spec, dev)
    prompts = held_out_prompts(chain, spec)
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        cast = model if dtype == torch.float32 else copy.deepcopy(model).to(dtype)
        row: dict[str, Any] = {"dtype": str(dtype).removeprefix("torch.")}
        outputs = {}
        for backend in ("dynamic", "static"):
            cfg = EvalConfig(max_new_tokens=spec.new_tokens, batch_size=spec.eval_batch, backend=backend)

            def call(m: Any = cast, c: EvalConfig = cfg) -> list[list[int]]:
                return decode(m, prompts, c, seed=0, pad_id=PAD, eos_id=None)

            _, row[f"{backend}_first_s"] = timed_decode(call, dev)
            outputs[backend], row[f"{backend}_steady_s"] = timed_decode(call, dev)
        row.update(compare(outputs["dynamic"], outputs["static"]))
        row["speedup"] = row["dynamic_steady_s"] / row["static_steady_s"]
        rows.append(row)
    last = losses[-10:]
    low, high = spec.prompt_lengths
    facts = {
        "student": f"{type(model).__name__}, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params, "
        f"{config.num_hidden_layers} layers, vocabulary {config.vocab_size}, random init",
        "task": f"second-order Markov chain over tokens 1..{spec.chain_vocab}: {CANDIDATES} successors per "
        "token, their odds shifted by the token before it",
        "training": f"{steps} steps of {spec.batch} x {spec.seq} tokens, AdamW lr {spec.lr}, float32"
        + (" under bf16 autocast" if dev.type == "cuda" else "")
        + f", {train_s:.1f} s",
        "final training loss": f"{sum(last) / len(last):.3f} (mean of the last {len(last)} steps; "
        f"the floor, the chain's entropy: {peaked['entropy']:.3f})",
        "mean max-prob": f"{peaked['max_prob']:.3f} (the model's top next-token probability on held-out "
        f"sequences, float32; the chain's own: {peaked['chain_max_prob']:.3f})",
        "near-ties": f"{peaked['near_ties']:.1%} of those positions have the model's top two within 0.05",
        "decoding": f"greedy, {spec.prompts} held-out prompts of {low}-{high} tokens, {spec.new_tokens} new "
        f"tokens, no EOS, batches of {spec.eval_batch} (left-padded), generate.decode",
        "columns": f"static's rows against dynamic's: whole output and first {PREFIX} new tokens identical, "
        "mean first differing new token (1 = the first) among rows that differ; first call (compilation "
        "included on CUDA) and steady seconds per backend; dynamic steady / static steady",
    }
    return rows, facts


def format_table(rows: list[dict], facts: dict[str, Any], size: str) -> str:
    header = machine_header(f"decode-parity, size {size}", facts)
    cols = [
        ("dtype", "dtype", "{}"),
        ("identical", "rows identical", "{}"),
        ("prefix_identical", f"first {PREFIX} identical", "{}"),
        ("first_difference", "mean first difference", "{:.1f}"),
        ("dynamic_first_s", "dynamic first s", "{:.2f}"),
        ("dynamic_steady_s", "dynamic steady s", "{:.2f}"),
        ("static_first_s", "static first s", "{:.2f}"),
        ("static_steady_s", "static steady s", "{:.2f}"),
        ("speedup", "static speed-up", "{:.1f}x"),
    ]
    return header + "\n\n" + markdown_table(rows, cols)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=list(SIZES), default="small")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the size's)")
    args = parser.parse_args()
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be at least 1")
    rows, facts = main(args.size, args.device, args.steps)
    print(format_table(rows, facts, args.size))


if __name__ == "__main__":
    cli()
