"""The device a benchmark runs on."""

from __future__ import annotations

import torch

from speckd_bench.errors import UserError


def bench_device(device: str) -> str:
    """cpu or cuda; `auto` is cuda when one is visible. Asking for cuda without one is a UserError."""
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible; use --device cpu")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device
