"""Environment facts for run records, training-log statistics, and the records of a results folder."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from speckd_bench.config import NON_RESULT_KEYS, flatten
from speckd_bench.record import INTERRUPTED, RECORD_FILE, RecordError, RunRecord


def new_run_id(task: str, method: str, seed: int) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{task}-{method}-s{seed}-{uuid.uuid4().hex[:6]}"


def git_commit() -> str | None:
    """The commit of the checkout this package runs from, if it is one."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def versions() -> dict[str, str]:
    import torch
    import transformers

    from speckd_bench import __version__

    return {
        "speckd_bench": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


def hardware() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
    return info


def read_log(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSONL training log; a last line without its newline (torn by a kill) is left out."""
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.endswith("\n") and line.strip()]


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


@dataclass
class LoadedRecords:
    records: list[RunRecord]
    skipped: list[tuple[str, str]]
    """(path, reason) of records that could not be used."""


def load_records(results_dir: Path, include_interrupted: bool = False) -> LoadedRecords:
    """Every complete record under results_dir/runs (and the interrupted ones when asked); run folders
    without a usable record are listed as skipped, with the reason.

    A record is complete only when the run's final write of it succeeded with status "complete"; a run
    stopped by Ctrl-C leaves status "interrupted", a killed one no record at all.
    """
    records, skipped = [], []
    runs = results_dir / "runs"
    run_dirs = (
        sorted(d for d in runs.iterdir() if d.is_dir() and not d.name.startswith("."))
        if runs.is_dir()
        else []
    )
    for run_dir in run_dirs:
        path = run_dir / RECORD_FILE
        if not path.is_file():
            hint = f"resume it with: speckd-bench run --resume {run_dir.name}"
            skipped.append((str(run_dir), f"no record.json: still running, or killed ({hint})"))
            continue
        try:
            record = RunRecord.read(path)
        except RecordError as exc:
            skipped.append((str(path), str(exc)))
            continue
        if record.status == INTERRUPTED and not include_interrupted:
            skipped.append((str(path), "status interrupted (shown with --include-interrupted)"))
        else:
            records.append(record)
    return LoadedRecords(records, skipped)


def result_config(config: dict[str, Any]) -> dict[str, Any]:
    """A record's config without the keys that never change its results (paths, checkpointing, ...)."""
    return {k: v for k, v in flatten(config).items() if k not in NON_RESULT_KEYS}


def find_complete(results_dir: Path, cfg: Any) -> Path | None:
    """The record of a complete run under results_dir whose config equals cfg's in every result key."""
    wanted = result_config(cfg.to_dict())
    for record in load_records(results_dir).records:
        if record.complete and result_config(record.config) == wanted:
            return results_dir / "runs" / str(record.run_id) / RECORD_FILE
    return None
