"""One run, read top to bottom: `RunRecipe(cfg).run()` goes through the named stages

    setup -> score_before("raw") -> warm_start -> score_before("init") -> train -> evaluate -> finish
    (on_interrupt when stopped)

setup loads data and models and opens the run folder; score_before scores the raw student, then, after
warm_start has loaded the cached SFT init of the student (or built and cached it), the init student;
train runs the method's Trainer; evaluate scores the trained student; finish writes the complete record.
Each stage records what it produced in the run's state, so a resumed run skips what it already finished.

Launched with several processes, every process runs the recipe; training and evaluation are split between
them, and only the main process writes the run folder and says anything.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from transformers.utils import logging as transformers_logging

from speckd_bench.api.method_config import check_vocabulary
from speckd_bench.api.methods import DataPolicy, PolicyContext
from speckd_bench.caches import atomic_write_jsonl, cache_dir, probe_writable, writing
from speckd_bench.config.run_config import RunConfig, build_config
from speckd_bench.data.examples import build_examples
from speckd_bench.data.rows import load_split
from speckd_bench.data.tasks import run_defaults, task_sources
from speckd_bench.distributed import process_context, shard_teacher
from speckd_bench.engine import teacher_cache, tracking
from speckd_bench.engine.run_checks import (
    check_distributed,
    check_lengths,
    check_writable,
    distributed_info,
    resolve_names,
)
from speckd_bench.engine.run_state import CHECKPOINTS, Checkpoints, RunState, save_final
from speckd_bench.engine.trainer import Stage, Trainer, TrainResult, run_seeds
from speckd_bench.engine.warmstart import WarmStart, init_rows, init_stage
from speckd_bench.errors import RunInterrupted, UserError
from speckd_bench.evaluation.evaluate import (
    EvalResult,
    TeacherView,
    build_eval_examples,
    eval_seeds,
    eval_sets_info,
    evaluate_sets,
    load_eval_sets,
    warn_skipped,
)
from speckd_bench.evaluation.lmeval import run_lm_eval
from speckd_bench.evaluation.reference import reference_rows
from speckd_bench.loss.objective import LiveTeacher, TeacherSource
from speckd_bench.methods.discovery import method_config
from speckd_bench.models.loading import load_pair
from speckd_bench.progress import console, stage
from speckd_bench.records.environment import git_commit, hardware, new_run_id, versions
from speckd_bench.records.run_record import COMPLETE, INTERRUPTED, RECORD_FILE, RunRecord, portable_config
from speckd_bench.records.train_log import read_log, summarize_log


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _before(before: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    return {"before": before[name]} if name in before else {}


class RunRecipe:
    """Train, evaluate and record one seed of `cfg`; `run()` returns the record's path.

    `resume`: the folder of an unfinished run with this config; its finished stages are reused and
    training continues from its newest checkpoint. Ctrl-C (or SIGTERM) checkpoints, writes an
    'interrupted' record and raises RunInterrupted. The main process holds the run folder's lock
    throughout; a disk that refuses a write ends the run with a UserError naming the folder. A
    non-finite loss stops training; the record of the last good weights is written, then UserError says
    so. `report_to`: experiment trackers that get the config, every
    training-log row and the final scores (tracking.py).
    """

    def __init__(
        self,
        cfg: RunConfig,
        quiet: bool = False,
        resume: Path | None = None,
        report_to: list[str] | None = None,
    ) -> None:
        self.cfg, self.resume, self.report_to = cfg, resume, report_to or []
        self.dist = process_context()
        self.quiet = quiet or not self.dist.is_main
        self.wall0 = time.perf_counter()
        self.timings: dict[str, float] = {}
        self.before: dict[str, dict[str, Any]] = {}
        self.init: dict[str, Any] = {}
        self.after: dict[str, EvalResult] = {}
        self.policy: DataPolicy | None = None
        self.teacher: TeacherSource | None = None
        self.locked: RunState | None = None

    def run(self) -> Path:
        try:
            self.setup()
            try:
                t0 = time.perf_counter()
                self.score_before("raw")
                self.warm_start()
                self.score_before("init")
                self.timings["before_s"] = time.perf_counter() - t0
                result = self.train()
                self.evaluate()
            except KeyboardInterrupt as exc:
                self.on_interrupt(exc)
            return self.finish(result)
        except OSError:  # a full disk while the training log is written: one line naming the folder
            with writing(self.locked.dir if self.locked else self.results_dir):
                raise
        finally:
            if self.locked is not None:
                self.locked.release()

    def say(self, msg: str) -> None:
        if not self.quiet:
            console.print(msg)

    # --- setup ---------------------------------------------------------------------------------------

    def setup(self) -> None:
        """Check everything that can fail cheaply, then load the data, the models and the run folder."""
        cfg, dist = self.cfg, self.dist
        transformers_logging.disable_progress_bar()
        transformers_logging.set_verbosity_error()
        self.task, self.method = resolve_names(cfg)
        check_distributed(cfg, self.method, dist)
        self.results_dir = Path(cfg.results_dir)
        check_writable(self.results_dir)
        probe_writable(cache_dir())
        if self.resume is not None:
            Checkpoints.of_run(self.resume, cfg).check()
        self.train_split = load_split(self.task, "train", cfg.data)
        self.sets, self.skipped = load_eval_sets(cfg.task, cfg.eval.suite, cfg.data)
        warn_skipped(self.skipped)
        if dist.device.type == "cpu":
            torch.use_deterministic_algorithms(True)  # a CPU run repeats bit for bit, resumed or not
        self._load_models()
        check_vocabulary(cfg.method, self.pair.vocab_size)
        check_lengths(cfg, [self.pair.student, self.pair.teacher])
        self._build_examples()
        self._open_run_folder()
        n_eval = " + ".join(f"{len(es.examples)} {es.name}" for es in self.sets)
        self.say(
            f"[bold]{self.run_id}[/]: {len(self.train_ex)} train / {n_eval} eval rows, device {dist.device}"
        )
        self.tracker = tracking.Tracking(self.report_to if dist.is_main else [])
        self.tracker.start(self.run_id, cfg.to_dict(), self.state.dir)
        self.references: dict[str, dict[str, Any]] = {}
        self.view: TeacherView | None = None
        if self.with_reference:
            self.references, self.view = reference_rows(cfg, self.pair, self.sets, self.quiet)
        self.warm = WarmStart(cfg, self.init_ex, self.pair.info)
        self.score_keys = {es.name: self.warm.eval_key(es.name, es.examples) for es in self.sets}
        self.init = self.state.get("init", {"enabled": cfg.train.init_sft_epochs > 0})
        self.before = self.state.get("before", {es.name: {} for es in self.sets})

    def _load_models(self) -> None:
        cfg, dist = self.cfg, self.dist
        t0 = time.perf_counter()
        sharded = cfg.train.fsdp and dist.world > 1
        self.with_reference = cfg.eval.reference and not sharded  # a sharded teacher cannot decode alone
        method = self.method
        with_teacher = method.uses_teacher or method.policy is not None or self.with_reference
        cpu = torch.device("cpu") if sharded else None
        with stage("load models", self.quiet):
            self.pair = load_pair(cfg.model, dist.device, with_teacher, teacher_device=cpu)
        if sharded and self.pair.teacher is not None:
            self.pair.teacher = shard_teacher(self.pair.teacher, dist)
        self.timings["model_load_s"] = time.perf_counter() - t0

    def _build_examples(self) -> None:
        cfg, tok = self.cfg, self.pair.tokenizer
        rows = self.train_split.rows
        self.train_ex = build_examples(self.task, rows[: cfg.data.max_train_examples], tok, cfg.data)
        n_init = init_rows(cfg, len(rows))
        same = n_init == len(self.train_ex)
        self.init_ex = self.train_ex if same else build_examples(self.task, rows[:n_init], tok, cfg.data)
        build_eval_examples(self.sets, tok, cfg.data)

    def _open_run_folder(self) -> None:
        """The run folder's state: created (or reopened) by the main process, read by the others."""
        cfg, dist = self.cfg, self.dist
        state = None
        if dist.is_main and self.resume is None:
            run_dir = self.results_dir / "runs" / new_run_id(cfg.task, cfg.method.name, cfg.seed)
            state = RunState.create(run_dir, cfg, hold=True)
            state.put("created", datetime.now(timezone.utc).isoformat(timespec="seconds"))
        elif dist.is_main:
            state = RunState(self.resume).hold()
        self.locked = state
        run_dir = dist.broadcast(state.dir if state else None)
        self.state = state or RunState(run_dir, writable=False)
        self.wall_before = self.state.get("wall_s", 0.0)
        self.run_id = self.state.dir.name
        self.log_path = self.state.dir / "train_log.jsonl"
        self.checkpoints = Checkpoints.of_run(self.state.dir, cfg)
        if self.resume is not None:
            resumed = [*self.state.get("resumed_from_step", []), self.checkpoints.latest_step()]
            self.state.put("resumed_from_step", resumed)

    def score(self, label: str) -> dict[str, EvalResult]:
        """Scores of the student as it is now on every eval set."""
        pair = self.pair
        return evaluate_sets(
            pair.student, pair.tokenizer, self.sets, self.cfg.eval, label, self.quiet, self.view
        )

    # --- before-scores and warm start ---------------------------------------------------------------

    def score_before(self, stage: str) -> None:
        """Scores of the raw (or init) student on every eval set, once per run (a resumed run has them in
        its state); with a warm start they are cached beside it, so later methods reuse them."""
        cfg, names = self.cfg, [es.name for es in self.sets]
        with_init = cfg.train.init_sft_epochs > 0
        if stage == "init" and not with_init:
            return
        if cfg.eval.eval_before and not all(stage in self.before[n] for n in names):
            keys = self.score_keys
            cached = {n: self.warm.cached_eval(stage, keys[n]) for n in names} if with_init else {}
            if not cached or any(v is None for v in cached.values()):
                cached = {n: r.summary() for n, r in self.score(f"eval {stage} student").items()}
            for name, summary in cached.items():
                self.before[name][stage] = summary
            self.state.put("before", self.before)
            if stage == "init":
                self._store_before("init")
        if stage == "init" and cfg.eval.eval_before:
            self.init["scores"] = {name: self.before[name]["init"]["metrics"] for name in names}
            self.state.put("init", self.init)

    def _store_before(self, stage: str) -> None:
        """Keep the scores of `stage` with the warm start (once its folder exists)."""
        if all(stage in per_set for per_set in self.before.values()):
            for name, per_set in self.before.items():
                self.warm.store_eval(stage, self.score_keys[name], per_set[stage])

    def warm_start(self) -> None:
        """Load the cached SFT init into the student, or build it and cache it; skipped when training
        already has a checkpoint (which holds later weights)."""
        cfg, warm = self.cfg, self.warm
        if not cfg.train.init_sft_epochs or self.checkpoints.latest() is not None:
            return
        built = {"enabled": True, "key": warm.key, "plan": warm.plan, "path": f"init/{warm.key}"}
        with warm.building() as reuse:
            built["reused"] = reuse
            if reuse:
                warm.load_into(self.pair.student)
            else:
                self._build_init()
        built["training"] = summarize_log(read_log(warm.dir / "train_log.jsonl"), cfg.train.spike_factor)
        built["seconds_when_built"] = warm.meta()["seconds"]
        if "key" not in self.init:
            self.init = built
            self.state.put("init", self.init)
        self._store_before("raw")

    def _build_init(self) -> None:
        cfg, pair, warm = self.cfg, self.pair, self.warm
        log = self.state.dir / "init_log.jsonl"
        trainer = Trainer(
            init_stage(cfg), pair.student, None, self.init_ex, vocab_size=pair.vocab_size,
            pad_id=pair.tokenizer.pad_token_id,
        )  # fmt: skip
        res = trainer.fit(log, self.quiet)
        if res.diverged_at is not None:  # never cache (and share) a broken init
            raise UserError(
                f"the SFT warm start diverged: non-finite loss at step {res.diverged_at}; lower "
                f"train.init_lr (now {cfg.train.init_lr}) or skip it with --set train.init_sft_epochs=0"
            )
        facts = {"steps": res.steps, "seconds": res.seconds, "tokens_per_s": res.tokens_per_s}
        warm.save(pair.student, log, facts)
        log.unlink(missing_ok=True)  # only the main process wrote it

    # --- train and evaluate -----------------------------------------------------------------------------

    def _teacher_source(self) -> TeacherSource | None:
        cfg, pair, method = self.cfg, self.pair, self.method
        if not method.uses_teacher:
            return None
        if cfg.train.teacher_cache and teacher_cache.applies(method):
            pad = pair.tokenizer.pad_token_id
            return teacher_cache.cached_teacher(
                cfg, pair.teacher, self.task.name, pair.vocab_size, pad, self.train_ex
            )
        return LiveTeacher(pair.teacher)

    def train(self) -> TrainResult:
        """The method's training stage, unless a resumed run finished it already."""
        cfg, pair, method = self.cfg, self.pair, self.method
        trained = self.state.get("trained")
        if trained is not None:
            self.checkpoints.load_weights(pair.student)
            return TrainResult(**trained)
        self.say(f"training [bold]{method.name}[/] ({method.description})")
        context = PolicyContext(
            cfg, self.task, pair.student, pair.teacher, pair.tokenizer, pair.vocab_size, self.dist.device,
            run_seeds(cfg.seed)["policy"],
        )  # fmt: skip
        self.policy = method.policy(context) if method.policy else None
        self.teacher = self._teacher_source()
        trainer = Trainer(
            Stage.kd(cfg, method), pair.student, self.teacher, self.train_ex, vocab_size=pair.vocab_size,
            pad_id=pair.tokenizer.pad_token_id, policy=self.policy, checkpoints=self.checkpoints,
            on_step=self.tracker.log_step,
        )  # fmt: skip
        result = trainer.fit(self.log_path, self.quiet)
        self.state.put("trained", asdict(result))
        return result

    def evaluate(self) -> None:
        """Score the trained student; keep its samples and weights in the run folder."""
        self.after = self.score("eval trained student")
        if self.dist.is_main:
            samples = [s for r in self.after.values() for s in r.samples]
            atomic_write_jsonl(self.state.dir / "samples.jsonl", samples)
            save_final(self.pair.student, self.pair.tokenizer, self.state.dir / "checkpoint")

    # --- the record -----------------------------------------------------------------------------------

    def record(self, status: str, before: dict[str, dict[str, Any]]) -> RunRecord:
        """The record of what the stages produced so far."""
        cfg, method, pair, dist = self.cfg, self.method, self.pair, self.dist
        facts = distributed_info(cfg, dist)
        train_file = self.train_split.source
        return RunRecord(
            run_id=self.run_id, status=status, task=self.task.name, main_metric=self.task.metrics[0],
            config=portable_config(cfg.to_dict()), versions=versions(), hardware=hardware(),
            timings={**self.timings}, paths={"train_log": "train_log.jsonl", "checkpoints": CHECKPOINTS},
            created=self.state.get("created"), method=method.name, seed=cfg.seed, **facts,
            method_info={
                "description": method.description, "paper": method.paper,
                "data_policy": method.data_policy, "uses_teacher": method.uses_teacher,
            },
            git_commit=git_commit(), models=pair.info,
            data={
                "source": "mirror" if train_file.startswith("mirror:") else "hub",
                "train_file": train_file, "eval_file": self.sets[0].rows.source,
                "n_train": len(self.train_ex), "n_eval": len(self.sets[0].examples),
                "train_target_tokens": sum(len(e.target_ids) for e in self.train_ex),
                "eval_sets": eval_sets_info(self.sets, self.skipped),
                "task_sources": task_sources([self.task.name, *(es.name for es in self.sets)]),
            },
            seeds={**run_seeds(cfg.seed), "eval": eval_seeds(cfg.eval)},
            resumed_from_step=self.state.get("resumed_from_step", []),
            init=self.init or self.state.get("init", {}),
            metrics={
                es.name: {"reference": self.references.get(es.name, {}), **_before(before, es.name)}
                for es in self.sets
            },
        )  # fmt: skip

    def on_interrupt(self, exc: KeyboardInterrupt) -> None:
        """Write an 'interrupted' record that says how to continue, then stop with RunInterrupted."""
        record = self.record(INTERRUPTED, self.state.get("before", {}))
        rows = read_log(self.log_path) if self.log_path.is_file() else []
        record.training = summarize_log(rows, self.cfg.train.spike_factor)
        record.timings["wall_s"] = self.wall_s()
        self.state.put("wall_s", record.timings["wall_s"])
        command = f"speckd-bench run --resume {self.run_id} --results-dir {self.results_dir}"
        record.resume = {"checkpoint_step": self.checkpoints.latest_step(), "command": command}
        if self.dist.is_main:
            record.write(self.state.dir / RECORD_FILE)
        self.tracker.finish()
        raise RunInterrupted(
            f"run {self.run_id} {exc or 'interrupted'}; continue it with: {command}"
        ) from None

    def finish(self, res: TrainResult) -> Path:
        """Write the complete record, drop the resumable checkpoints, print the summary."""
        cfg, dist = self.cfg, self.dist
        path = self.state.dir / RECORD_FILE
        record = self.record(COMPLETE, self.before)
        record.training = summarize_log(read_log(self.log_path), cfg.train.spike_factor)
        if res.diverged_at is not None:
            record.training["diverged_at_step"] = res.diverged_at
        main = cfg.lm_eval.tasks and dist.is_main
        record.lm_eval = (
            run_lm_eval(self.pair.student, self.pair.tokenizer, cfg, self.quiet) if main else None
        )
        record.timings.update(self._timings(res))
        for name, result in self.after.items():
            record.metrics[name]["after"] = result.summary()
        record.policy = self.policy.summary() if self.policy else {}
        used = isinstance(self.teacher, teacher_cache.CachedTeacher)
        record.teacher_cache = self.teacher.info if used else {"used": False}
        record.paths = {
            "train_log": "train_log.jsonl",
            "samples": "samples.jsonl",
            "checkpoint": "checkpoint",
        }
        if dist.is_main:
            record.write(path)
            self.checkpoints.remove()  # the record is complete, nothing left to resume; weights stay
            self.state.release(complete=True)
        self.tracker.log_final(record.metrics, res.steps)
        self.tracker.finish()
        if res.diverged_at is None:  # a divergence is reported by its error line instead
            self._summary(record, path)
        if res.diverged_at is not None:
            raise UserError(
                f"run {self.run_id} diverged: non-finite loss at training step {res.diverged_at}; its "
                f"record keeps the last good weights (step {res.steps}): lower train.lr (now "
                f"{cfg.train.lr:g}) and run again"
            )
        return path

    def wall_s(self) -> float:
        """Wall time of every session of this run: the earlier ones (interrupted) and this one."""
        return self.wall_before + time.perf_counter() - self.wall0

    def _timings(self, res: TrainResult) -> dict[str, float]:
        stages = [b for per_set in self.before.values() for b in per_set.values()]
        after_tokens = sum(r.new_tokens for r in self.after.values())
        after_seconds = sum(r.seconds for r in self.after.values())
        eval_tokens = after_tokens + sum(b.get("new_tokens", 0) for b in stages)
        eval_seconds = after_seconds + sum(b.get("seconds", 0.0) for b in stages)
        return {
            "wall_s": self.wall_s(),
            "train_s": res.seconds,
            "train_tokens_per_s": res.tokens_per_s,
            "train_target_tokens": res.target_tokens,
            "eval_s": after_seconds,
            "eval_tokens_per_s": eval_tokens / eval_seconds if eval_seconds else 0.0,
        }

    def _summary(self, record: RunRecord, path: Path) -> None:
        """The result in a few lines: on stdout, or with --quiet on stderr (its stdout is the record's
        path alone, for scripts)."""
        lines = []
        for es in self.sets:
            metric = es.task.metrics[0]
            before = self.before[es.name]
            raw = before.get("raw", {}).get("metrics", {}).get(metric)
            init = before.get("init", {}).get("metrics", {}).get(metric)
            after = self.after[es.name].metrics[metric]
            lines.append(f"{es.name} {metric}: raw {_fmt(raw)} -> init {_fmt(init)} -> after {_fmt(after)}")
        lines.append(f"{record.timings['wall_s']:.0f} s, record: {path}")
        for line in lines if self.dist.is_main else []:
            if self.quiet:
                print(line, file=sys.stderr)
            else:
                console.print(line, markup=False)


def build_run_config(**kwargs: Any) -> RunConfig:
    """config.build_config with the registered methods' and tasks' own defaults (what `run` resolves)."""
    return build_config(method_config=method_config, task_defaults=run_defaults, **kwargs)


def run_once(
    cfg: RunConfig, quiet: bool = False, resume: Path | None = None, report_to: list[str] | None = None
) -> Path:
    """Train, evaluate and record one seed; returns the record's path (see RunRecipe)."""
    return RunRecipe(cfg, quiet, resume, report_to).run()
