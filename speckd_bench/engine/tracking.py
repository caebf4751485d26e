"""Experiment trackers (`run --report-to tensorboard,mlflow,...`) through accelerate's tracker classes:
the resolved config, every training-log row, the final metrics and lm-eval's scores, under the run id,
with the tracker's local files in <run>/trackers/. The training loop only calls log_step; no tracker code
of our own."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from speckd_bench.config.run_config import flatten
from speckd_bench.errors import UserError, did_you_mean
from speckd_bench.evaluation.lmeval import lm_eval_metrics

PROJECT = "speckd-bench"
"""wandb / trackio project, MLflow experiment (MLFLOW_EXPERIMENT_NAME wins) of every run."""
EXTRAS = ("tensorboard", "mlflow", "wandb", "trackio")
"""Trackers with an extra of their own: pip install 'speckd-bench[NAME]'."""
_PACKAGES = {"comet_ml": "comet-ml", "clearml": "clearml", "dvclive": "dvclive", "aim": "aim"}


def tracker_names() -> list[str]:
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    return sorted(LOGGER_TYPE_TO_CLASS)


def parse_report_to(text: str | None) -> list[str]:
    """`a,b` -> ['a', 'b']; none/empty -> []; unknown or uninstalled trackers fail in one line."""
    names = [n.strip() for n in (text or "").split(",") if n.strip() and n.strip() != "none"]
    known = tracker_names()
    from accelerate.tracking import get_available_trackers

    available = {str(t) for t in get_available_trackers()}
    for name in names:
        if name not in known:
            raise UserError(
                f"--report-to {name!r} is not a tracker accelerate knows ({', '.join(known)})"
                f"{did_you_mean(name, known)}"
            )
        if name not in available:
            package = f"'speckd-bench[{name}]'" if name in EXTRAS else _PACKAGES.get(name, name)
            raise UserError(f"--report-to {name}: the tracker is not installed; pip install {package}")
    return list(dict.fromkeys(names))


def _hparams(config: dict[str, Any]) -> dict[str, bool | int | float | str]:
    """The flat config with every value a scalar the trackers accept (lists and None as text)."""
    scalar = (bool, int, float, str)
    return {k: v if isinstance(v, scalar) else str(v) for k, v in flatten(config).items()}


def _numbers(values: dict[str, Any], prefix: str) -> dict[str, float]:
    return {
        f"{prefix}{k}": v for k, v in values.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }


class Tracking:
    """The trackers of one run (none: every call does nothing)."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.trackers: list[Any] = []

    def _make(self, name: str, run_id: str, folder: Path) -> Any:
        """The tracker as Accelerator.init_trackers would build it, told the run id and folder."""
        from accelerate.tracking import LOGGER_TYPE_TO_CLASS

        cls = LOGGER_TYPE_TO_CLASS[name]
        if cls.requires_logging_directory:  # tensorboard, aim: <run>/trackers/<name>/
            return cls(name, folder)
        if name == "mlflow":
            import mlflow

            if "MLFLOW_TRACKING_URI" not in os.environ:  # a local store in the run folder
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
                mlflow.set_tracking_uri((folder / "mlruns").resolve().as_uri())
            return cls(PROJECT, run_name=run_id)
        kwargs: dict[str, dict[str, Any]] = {
            "wandb": {"name": run_id, "dir": str(folder)},
            "trackio": {"name": run_id},
            "swanlab": {"experiment_name": run_id, "logdir": str(folder / "swanlab")},
            "dvclive": {"dir": str(folder / "dvclive")},
        }
        return cls(PROJECT, **kwargs.get(name, {}))

    def start(self, run_id: str, config: dict[str, Any], run_dir: Path) -> None:
        """Open every tracker for the run and log its resolved config."""
        if not self.names:
            return
        from accelerate import PartialState

        PartialState()  # accelerate's trackers log through its logger, which needs the state set up
        folder = run_dir / "trackers"
        folder.mkdir(parents=True, exist_ok=True)
        values = {"run_id": run_id, **_hparams(config)}
        for name in self.names:
            tracker = self._make(name, run_id, folder)
            tracker.start()
            tracker.store_init_configuration(values)
            self.trackers.append(tracker)

    def log_step(self, row: dict[str, Any], step: int) -> None:
        """One training-log row (its numbers, as train_log.jsonl has them) as train/<key> at `step`."""
        values = _numbers({k: v for k, v in row.items() if k != "step"}, "train/")
        for tracker in self.trackers:
            tracker.log(values, step=step)

    def log_final(self, metrics: dict[str, Any], step: int | None = None) -> None:
        """The run's scores: metrics[eval_set] as the record holds them (before.raw/init, after)."""
        values: dict[str, float] = {}
        for name, per_set in metrics.items():
            for stage, summary in per_set.get("before", {}).items():
                values |= _numbers(summary.get("metrics", {}), f"{stage}/{name}/")
            values |= _numbers(per_set.get("after", {}).get("metrics", {}), f"eval/{name}/")
        for tracker in self.trackers:
            tracker.log(values, step=step)

    def log_lm_eval(self, lm_eval: dict[str, Any] | None, step: int | None = None) -> None:
        """lm-eval's scores as lm_eval/<task>/<metric> (/<filter> unless lm-eval's `none`); nothing when
        lm-eval was not run or failed."""
        values = {
            "/".join(["lm_eval", task, metric, *([name] if name != "none" else [])]): value
            for task, metric, name, value in lm_eval_metrics(lm_eval)
        }
        for tracker in self.trackers if values else []:
            tracker.log(values, step=step)

    def finish(self) -> None:
        for tracker in self.trackers:
            tracker.finish()
        self.trackers = []
