"""One KD optimiser step (forward, backward, AdamW) in every loss layout, measured in one process.

Variants: the floor (a student SFT step; a teacher forward), the naive full-logit forward KL (both
models' logits at every position, as a from-scratch script would do), the harness's plain path (logits
only at target rows) and its fused chunked path, each with and without SpecKD's gate; the gated fused
step at three chunk sizes, with the per-chunk body compiled and not, and on a CPU under bf16 autocast;
Liger-Kernel's fused linear JSD(beta=0) when liger_kernel is installed (CUDA only). Random-init models
from configs, random token ids: nothing is downloaded.

    python -m speckd_bench.benchmarks.kd_step --size qwen      # Qwen2.5 1.5B -> 0.5B shapes (GPU)
    speckd-bench bench kd-step --size smollm2                  # the default CPU pair's shapes
"""

from __future__ import annotations

import argparse
import copy
import gc
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from transformers import AutoModelForCausalLM

from speckd_bench.api.method_config import KDConfig, MethodConfig
from speckd_bench.benchmarks.common import llama_config, machine_header, markdown_table, qwen25_config
from speckd_bench.config.run_config import TrainConfig
from speckd_bench.data.examples import IGNORE, Batch
from speckd_bench.distributed import process_context
from speckd_bench.engine.trainer import accumulate
from speckd_bench.loss.chunked_head import chunk_rows as chunk_rows_of
from speckd_bench.loss.divergences import per_token_divergence
from speckd_bench.loss.objective import LiveTeacher, MicroBatch


@dataclass(frozen=True)
class Shapes:
    teacher: Any
    student: Any
    batch: int
    seq: int


SIZES: dict[str, Callable[[], Shapes]] = {
    "small": lambda: Shapes(
        llama_config(128, 4, 4, 2, 512, 49152), llama_config(128, 1, 4, 2, 512, 49152), 4, 128
    ),
    "smollm2": lambda: Shapes(
        llama_config(576, 30, 9, 3, 1536, 49152), llama_config(576, 6, 9, 3, 1536, 49152), 8, 256
    ),
    "qwen": lambda: Shapes(qwen25_config("1.5b"), qwen25_config("0.5b"), 8, 512),
}


def random_batch(shapes: Shapes, device: torch.device, seed: int = 0) -> Batch:
    """Random ids; every position but the last predicts the next token (all are targets)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, shapes.student.vocab_size, (shapes.batch, shapes.seq), generator=g)
    labels = torch.full_like(ids, IGNORE)
    labels[:, :-1] = ids[:, 1:]
    return Batch(ids, torch.ones_like(ids), labels).to(device)


def _naive_fkl(student: Any, teacher: Any, batch: Batch, vocab: int) -> tuple[torch.Tensor, int]:
    """Full [batch, seq, vocab] logits of both models, then forward KL at the target rows."""
    select = batch.labels != IGNORE
    with torch.no_grad():
        t_logits = teacher(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    s_logits = student(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    per_token = per_token_divergence("fkl", s_logits[select][:, :vocab], t_logits[select][:, :vocab])
    return per_token.sum(), int(select.sum())


def _liger_jsd(student: Any, teacher: Any, batch: Batch, vocab: int) -> tuple[torch.Tensor, int]:
    from liger_kernel.transformers import LigerFusedLinearJSD

    select = batch.labels != IGNORE
    with torch.no_grad():
        t_hidden = teacher.base_model(input_ids=batch.input_ids).last_hidden_state[select]
    s_hidden = student.base_model(input_ids=batch.input_ids).last_hidden_state[select]
    loss = LigerFusedLinearJSD(jsd_beta=0.0)(
        s_hidden,
        student.get_output_embeddings().weight[:vocab],
        t_hidden,
        teacher.get_output_embeddings().weight[:vocab],
        batch.labels[select],
    )
    n = int(select.sum())
    return loss * n, n


@dataclass(frozen=True)
class Variant:
    """One of the harness's own steps: the method's settings and the loss layout."""

    kd: KDConfig | None
    """None: a student SFT step."""
    train: TrainConfig


def harness_variants(device: torch.device, vocab: int, chunk_rows: int) -> dict[str, Variant]:
    """Every layout of the harness's step: plain and fused (default: automatic chunk rows, compiled on
    CUDA), the gated fused step at three chunk sizes and with the other compile setting, and on a CPU
    with bf16 autocast."""
    gated = KDConfig(divergence="fkl", gate="speckd", rule="topk", k=5)
    rows = chunk_rows_of(vocab, chunk_rows, device)
    plain = TrainConfig(fused_loss=False)
    fused = TrainConfig(fused_loss=True, fused_chunk_rows=rows)
    # the other compile setting than auto's; on a CPU only where inductor finds a C++ compiler
    other = "off" if device.type == "cuda" else "on" if shutil.which("g++") or shutil.which("clang++") else ""
    variants = {
        "student SFT step (plain)": Variant(None, plain),
        "student SFT step (fused)": Variant(None, fused),
        "fkl, plain (target rows)": Variant(KDConfig(), plain),
        "fkl, fused": Variant(KDConfig(), fused),
        "speckd top-5, plain": Variant(gated, plain),
        "speckd top-5, fused": Variant(gated, fused),
        f"speckd top-5, fused, {max(1, rows // 4)} rows": Variant(
            gated, replace(fused, fused_chunk_rows=max(1, rows // 4))
        ),
        f"speckd top-5, fused, {2 * rows} rows": Variant(gated, replace(fused, fused_chunk_rows=2 * rows)),
    }
    if other:
        variants[f"speckd top-5, fused, compile {other}"] = Variant(gated, replace(fused, compile_loss=other))
    if device.type == "cpu":
        bf16 = replace(fused, cpu_bf16_autocast=True)
        variants["fkl, fused, bf16 autocast"] = Variant(KDConfig(), bf16)
        variants["speckd top-5, fused, bf16 autocast"] = Variant(gated, bf16)
    return variants


def _step_fn(
    name: str, student: Any, teacher: Any, batch: Batch, vocab: int, harness: dict[str, Variant]
) -> Callable[[], None]:
    """One optimiser step of variant `name` (a fresh AdamW per variant: its state counts in the peak)."""
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-5)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=batch.input_ids.is_cuda)
    live, micro, dist = LiveTeacher(teacher), [MicroBatch(batch, [])], process_context()
    scripted = {"naive full-logit fkl": _naive_fkl, "liger fused linear JSD(beta=0)": _liger_jsd}

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        if name == "teacher forward":
            with torch.no_grad(), autocast:
                teacher(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
            return
        if name in harness:
            v = harness[name]
            source, mcfg = (None, MethodConfig()) if v.kd is None else (live, v.kd)
            accumulate(student, source, micro, mcfg, v.train, dist, vocab, None)
        else:
            with autocast:
                loss, n = scripted[name](student, teacher, batch, vocab)
            (loss / n).backward()
        optimizer.step()

    return step


def variants(device: torch.device, harness: dict[str, Variant]) -> list[str]:
    names = ["teacher forward", *list(harness)[:2], "naive full-logit fkl", *list(harness)[2:]]
    try:
        import liger_kernel  # noqa: F401
    except ImportError:
        return names
    return names + ["liger fused linear JSD(beta=0)"] if device.type == "cuda" else names


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(step: Callable[[], None], device: torch.device, warmup: int, steps: int) -> tuple[float, float]:
    """(median seconds per step, peak GiB allocated on CUDA or nan on CPU)."""
    for _ in range(warmup):
        step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return statistics.median(times), peak


def build_models(shapes: Shapes, device: torch.device, dtype: torch.dtype) -> tuple[Any, Any]:
    """Random-init teacher (frozen) and student, built directly on the device in `dtype`."""
    torch.manual_seed(0)
    with torch.device(device):
        teacher = AutoModelForCausalLM.from_config(shapes.teacher, dtype=dtype).eval().requires_grad_(False)
        student = AutoModelForCausalLM.from_config(shapes.student, dtype=dtype)
    return teacher, student


def main(
    size: str, device: str = "auto", dtype: str = "auto", steps: int = 5, warmup: int = 2, chunk_rows: int = 0
) -> tuple[list[dict], dict[str, Any]]:
    """(one row per variant, the facts of the run)."""
    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    param_dtype = {"auto": torch.bfloat16 if dev.type == "cuda" else torch.float32}.get(dtype) or getattr(
        torch, dtype
    )
    shapes = SIZES[size]()
    teacher, student = build_models(shapes, dev, param_dtype)
    batch = random_batch(shapes, dev)
    vocab = shapes.student.vocab_size
    tokens = shapes.batch * shapes.seq
    harness = harness_variants(dev, vocab, chunk_rows)
    rows: list[dict] = []
    for name in variants(dev, harness):
        model = copy.deepcopy(student)
        try:
            seconds, peak = measure(_step_fn(name, model, teacher, batch, vocab, harness), dev, warmup, steps)
        except torch.OutOfMemoryError:
            seconds, peak = float("nan"), float("nan")
        del model
        gc.collect()
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        rows.append(
            {
                "variant": name,
                "ms_per_step": 1000 * seconds,
                "peak_gib": peak,
                "tokens_per_s": tokens / seconds,
            }
        )
    ms = {row["variant"]: row["ms_per_step"] for row in rows}
    floor = ms["student SFT step (plain)"] + ms["teacher forward"]
    for row in rows:
        row["vs_naive"] = row["ms_per_step"] / ms["naive full-logit fkl"]
        row["vs_floor"] = row["ms_per_step"] / floor
    facts = {
        "teacher": f"{sum(p.numel() for p in teacher.parameters()) / 1e6:.0f}M params, "
        f"{shapes.teacher.num_hidden_layers} layers",
        "student": f"{sum(p.numel() for p in student.parameters()) / 1e6:.0f}M params, "
        f"{shapes.student.num_hidden_layers} layers",
        "vocabulary": vocab,
        "batch": f"{shapes.batch} x {shapes.seq} tokens, all targets",
        "dtype": f"parameters {str(param_dtype).removeprefix('torch.')}"
        + (", bf16 autocast" if dev.type == "cuda" else " (bf16 autocast where a variant says so)")
        + ", loss math float32",
        "fused chunk": f"{chunk_rows_of(vocab, chunk_rows, dev)} target rows unless a variant says otherwise",
        "compiled loss body": "on CUDA, unless a variant says otherwise",
        "floor": f"student SFT step (plain) + teacher forward = {floor:.1f} ms",
        "timing": f"median of {steps} steps after {warmup} warm-up steps, one process",
    }
    return rows, facts


def format_table(rows: list[dict], facts: dict[str, Any], size: str) -> str:
    header = machine_header(f"kd-step, size {size}", facts)
    cols = [
        ("variant", "variant", "{}"),
        ("ms_per_step", "ms/step", "{:.1f}"),
        ("vs_naive", "x naive", "{:.2f}"),
        ("vs_floor", "x floor", "{:.2f}"),
        ("peak_gib", "peak GiB", "{:.2f}"),
        ("tokens_per_s", "tokens/s", "{:.0f}"),
    ]
    return header + "\n\n" + markdown_table(rows, cols)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=list(SIZES), default="small")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--dtype", default="auto", help="parameter dtype (auto: bfloat16 on CUDA, float32 on CPU)"
    )
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--chunk-rows", type=int, default=0, help="rows per fused chunk (0: automatic)")
    args = parser.parse_args()
    rows, facts = main(args.size, args.device, args.dtype, args.steps, args.warmup, args.chunk_rows)
    print(format_table(rows, facts, args.size))


if __name__ == "__main__":
    cli()
