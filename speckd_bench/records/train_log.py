"""Statistics of a run's training log (train_log.jsonl): loss spikes, gradient-norm variation, final loss."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from speckd_bench.jsonl import read_jsonl


def read_log(path: Path) -> list[dict[str, Any]]:
    """The rows of a training log (train_log.jsonl), read as a file the harness appends to."""
    return read_jsonl(path, appended=True)


def count_spikes(losses: list[float], factor: float, window: int = 10) -> int:
    """Steps whose loss exceeds `factor` times the median of the previous `window` losses."""
    spikes = 0
    for i in range(window, len(losses)):
        if losses[i] > factor * statistics.median(losses[i - window : i]):
            spikes += 1
    return spikes


def summarize_log(rows: list[dict[str, Any]], spike_factor: float) -> dict[str, Any]:
    """Stability statistics of one training log."""
    good = [r for r in rows if r.get("loss") is not None]
    losses = [r["loss"] for r in good]
    norms = [r["grad_norm"] for r in good]
    tars = [r["tar"] for r in good if r.get("tar") is not None]
    quarter = losses[len(losses) - max(1, len(losses) // 4) :] if losses else []
    summary: dict[str, Any] = {
        "steps": len(good),
        "final_loss": losses[-1] if losses else None,
        "loss_std_last_quarter": statistics.pstdev(quarter) if quarter else None,
        "loss_spikes": count_spikes(losses, spike_factor),
        "grad_norm_mean": statistics.fmean(norms) if norms else None,
        "grad_norm_max": max(norms) if norms else None,
        "diverged": any(r.get("diverged") for r in rows),
    }
    if tars:
        summary.update(tar_first=tars[0], tar_last=tars[-1], tar_mean=statistics.fmean(tars), tar_series=tars)
    return summary
