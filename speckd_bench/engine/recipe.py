"""One run, read top to bottom: `RunRecipe(cfg).run()` goes through the named stages

    setup -> score_before("raw") -> warm_start -> score_before("init") -> train -> evaluate -> finish
    (on_interrupt when stopped)

setup loads data and models and opens the run folder; score_before scores the raw student, then, after
warm_start has loaded the cached SFT init of the student (or built and cached it), the init student;
train runs the method's Trainer; evaluate scores the trained student; finish writes the complete record.
Each stage hands the next what it produced (run_products.py) and records it in the run's state, so a
resumed run skips what it already finished. evaluate is the evaluation stage `speckd-bench eval` runs too
(scoring.py).

Launched with several processes, every process runs the recipe; training and evaluation are split between
them, and only the main process writes the run folder and says anything.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NoReturn

import torch

from speckd_bench.api.method_config import check_vocabulary
from speckd_bench.api.methods import Method, PolicyContext
from speckd_bench.caches import cache_dir, probe_writable, writing
from speckd_bench.config.run_config import RunConfig, build_config
from speckd_bench.data.examples import Example, build_examples
from speckd_bench.data.rows import load_split
from speckd_bench.data.tasks import TaskSpec, run_defaults, task_sources
from speckd_bench.distributed import process_context, shard_teacher
from speckd_bench.engine import teacher_cache, tracking
from speckd_bench.engine.curve import CURVE_FILE, LearningCurve, read_curve
from speckd_bench.engine.run_checks import (
    check_distributed,
    check_lengths,
    check_writable,
    distributed_info,
    resolve_names,
)
from speckd_bench.engine.run_products import FINAL_CHECKPOINT, TRAIN_LOG, Before, Setup, Trained
from speckd_bench.engine.run_state import CHECKPOINTS, Checkpoints, RunState, save_final
from speckd_bench.engine.scoring import (
    SAMPLES_FILE,
    EvalSets,
    Scoring,
    eval_speed,
    evaluate_student,
    lm_eval_scores,
    quiet_transformers,
)
from speckd_bench.engine.summary import main_metric, print_summary, summary_lines
from speckd_bench.engine.trainer import Stage, Trainer, TrainResult, run_seeds
from speckd_bench.engine.warmstart import WarmStart, init_rows, init_stage
from speckd_bench.errors import RunInterrupted, UserError
from speckd_bench.evaluation.evaluate import EvalResult, build_eval_examples, eval_seeds
from speckd_bench.loss.objective import LiveTeacher, TeacherSource
from speckd_bench.methods.discovery import method_config
from speckd_bench.models.loading import ModelPair, load_pair
from speckd_bench.progress import console, stage
from speckd_bench.records.environment import git_commit, hardware, new_run_id, versions
from speckd_bench.records.run_record import COMPLETE, INTERRUPTED, RECORD_FILE, RunRecord, portable_config
from speckd_bench.records.train_log import read_log, summarize_log


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
        self.results_dir = Path(cfg.results_dir)
        self.dist = process_context()
        self.quiet = quiet or not self.dist.is_main
        self.wall0 = time.perf_counter()
        self.timings: dict[str, float] = {}
        self.locked: RunState | None = None
        """The run folder's state while the main process holds its lock."""

    def run(self) -> Path:
        try:
            setup = self.setup()
            before = Before.of_run(self.cfg, setup)
            try:
                t0 = time.perf_counter()
                self.score_before(setup, before, "raw")
                self.warm_start(setup, before)
                self.score_before(setup, before, "init")
                self.timings["before_s"] = time.perf_counter() - t0
                trained = self.train(setup)
                after = self.evaluate(setup)
                lm_eval = self.lm_eval(setup)
            except KeyboardInterrupt as exc:
                self.on_interrupt(setup, before, exc)
            return self.finish(setup, before, trained, after, lm_eval)
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

    def setup(self) -> Setup:
        """Check everything that can fail cheaply, then load the data, the models and the run folder."""
        cfg, dist = self.cfg, self.dist
        quiet_transformers()
        task, method = resolve_names(cfg)
        check_distributed(cfg, method, dist)
        check_writable(self.results_dir)
        probe_writable(cache_dir())
        if self.resume is not None:
            Checkpoints.of_run(self.resume, cfg).check()
        train_split = load_split(task, "train", cfg.data)
        eval_sets = EvalSets.load(cfg)
        if dist.device.type == "cpu":
            torch.use_deterministic_algorithms(True)  # a CPU run repeats bit for bit, resumed or not
        sharded = cfg.train.fsdp and dist.world > 1
        with_reference = cfg.eval.reference and not sharded  # a sharded teacher cannot decode alone
        pair = self._load_models(method, with_reference)
        check_vocabulary(cfg.method, pair.vocab_size)
        check_lengths(cfg, [pair.student, pair.teacher])
        train_ex, init_ex = self._build_examples(task, train_split.rows, pair.tokenizer)
        build_eval_examples(eval_sets.sets, pair.tokenizer, cfg.data)
        state, checkpoints, wall_before = self._open_run_folder()
        n_eval = " + ".join(f"{len(es.examples)} {es.name}" for es in eval_sets.sets)
        self.say(
            f"[bold]{state.dir.name}[/]: {len(train_ex)} train / {n_eval} eval rows, device {dist.device}"
        )
        tracker = tracking.Tracking(self.report_to if dist.is_main else [])
        tracker.start(state.dir.name, cfg.to_dict(), state.dir)
        scoring = Scoring.build(cfg, eval_sets, self.quiet, pair if with_reference else None)
        warm = WarmStart(cfg, init_ex, pair.info)
        score_keys = {es.name: warm.eval_key(es) for es in eval_sets.sets}
        return Setup(
            task, method, train_split.source, train_ex, init_ex, eval_sets, pair, state, checkpoints,
            wall_before, scoring, warm, score_keys, tracker,
        )  # fmt: skip

    def _load_models(self, method: Method, with_reference: bool) -> ModelPair:
        cfg, dist = self.cfg, self.dist
        t0 = time.perf_counter()
        sharded = cfg.train.fsdp and dist.world > 1
        with_teacher = method.uses_teacher or method.policy is not None or with_reference
        cpu = torch.device("cpu") if sharded else None
        with stage("load models", self.quiet):
            pair = load_pair(cfg.model, dist.device, with_teacher, teacher_device=cpu)
        if sharded and pair.teacher is not None:
            pair.teacher = shard_teacher(pair.teacher, dist)
        self.timings["model_load_s"] = time.perf_counter() - t0
        return pair

    def _build_examples(
        self, task: TaskSpec, rows: list[dict[str, Any]], tokenizer: Any
    ) -> tuple[list[Example], list[Example]]:
        """The KD stage's training examples and the warm start's (the same list when the rows agree)."""
        cfg = self.cfg
        train_ex = build_examples(task, rows[: cfg.data.max_train_examples], tokenizer, cfg.data)
        n_init = init_rows(cfg, len(rows))
        same = n_init == len(train_ex)
        return train_ex, train_ex if same else build_examples(task, rows[:n_init], tokenizer, cfg.data)

    def _open_run_folder(self) -> tuple[RunState, Checkpoints, float]:
        """The run folder's state (created or reopened by the main process, read by the others), its
        checkpoints and the wall time of its earlier sessions."""
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
        state = state or RunState(run_dir, writable=False)
        checkpoints = Checkpoints.of_run(state.dir, cfg)
        wall_before = state.get("wall_s", 0.0)
        if self.resume is not None:
            resumed = [*state.get("resumed_from_step", []), checkpoints.latest_step()]
            state.put("resumed_from_step", resumed)
        return state, checkpoints, wall_before

    # --- before-scores and warm start ---------------------------------------------------------------

    def score_before(self, setup: Setup, before: Before, stage: str) -> None:
        """Scores of the raw (or init) student on every eval set, once per run (a resumed run has them in
        its state); with a warm start they are cached beside it, so later methods reuse them."""
        cfg, names, pair = self.cfg, setup.eval.names, setup.pair
        with_init = cfg.train.init_sft_epochs > 0
        if stage == "init" and not with_init:
            return
        if cfg.eval.eval_before and not all(stage in before.scores[n] for n in names):
            keys = setup.score_keys
            cached = {n: setup.warm.cached_eval(stage, keys[n]) for n in names} if with_init else {}
            if not cached or any(v is None for v in cached.values()):
                scored = setup.scoring.score(pair.student, pair.tokenizer, f"eval {stage} student")
                cached = {n: r.summary() for n, r in scored.items()}
            for name, summary in cached.items():
                before.scores[name][stage] = summary
            setup.state.put("before", before.scores)
            if stage == "init":
                self._store_before(setup, before, "init")
        if stage == "init" and cfg.eval.eval_before:
            before.init["scores"] = {name: before.scores[name]["init"]["metrics"] for name in names}
            setup.state.put("init", before.init)

    def _store_before(self, setup: Setup, before: Before, stage: str) -> None:
        """Keep the scores of `stage` with the warm start (once its folder exists)."""
        if all(stage in per_set for per_set in before.scores.values()):
            for name, per_set in before.scores.items():
                setup.warm.store_eval(stage, setup.score_keys[name], per_set[stage])

    def warm_start(self, setup: Setup, before: Before) -> None:
        """Load the cached SFT init into the student, or build it and cache it; skipped when training
        already has a checkpoint (which holds later weights)."""
        cfg, warm = self.cfg, setup.warm
        if not cfg.train.init_sft_epochs or setup.checkpoints.latest() is not None:
            return
        built = {"enabled": True, "key": warm.key, "plan": warm.plan, "path": f"init/{warm.key}"}
        with warm.building() as reuse:
            built["reused"] = reuse
            if reuse:
                warm.load_into(setup.pair.student)
            else:
                self._build_init(setup)
        built["training"] = summarize_log(read_log(warm.dir / "train_log.jsonl"), cfg.train.spike_factor)
        built["seconds_when_built"] = warm.meta()["seconds"]
        if "key" not in before.init:
            before.init = built
            setup.state.put("init", before.init)
        self._store_before(setup, before, "raw")

    def _build_init(self, setup: Setup) -> None:
        cfg, pair = self.cfg, setup.pair
        log = setup.state.dir / "init_log.jsonl"
        trainer = Trainer(
            init_stage(cfg), pair.student, None, setup.init_ex, vocab_size=pair.vocab_size,
            pad_id=pair.tokenizer.pad_token_id,
        )  # fmt: skip
        res = trainer.fit(log, self.quiet)
        if res.diverged_at is not None:  # never cache (and share) a broken init
            raise UserError(
                f"the SFT warm start diverged: non-finite loss at step {res.diverged_at}; lower "
                f"train.init_lr (now {cfg.train.init_lr}) or skip it with --set train.init_sft_epochs=0"
            )
        facts = {"steps": res.steps, "seconds": res.seconds, "tokens_per_s": res.tokens_per_s}
        setup.warm.save(pair.student, log, facts)
        log.unlink(missing_ok=True)  # only the main process wrote it

    # --- train and evaluate -----------------------------------------------------------------------------

    def _teacher_source(self, setup: Setup) -> TeacherSource | None:
        cfg, pair, method = self.cfg, setup.pair, setup.method
        if not method.uses_teacher:
            return None
        if cfg.train.teacher_cache and teacher_cache.applies(method):
            pad = pair.tokenizer.pad_token_id
            return teacher_cache.cached_teacher(
                cfg, pair.teacher, setup.task.name, pair.vocab_size, pad, setup.train_ex
            )
        return LiveTeacher(pair.teacher)

    def train(self, setup: Setup) -> Trained:
        """The method's training stage, unless a resumed run finished it already."""
        cfg, pair, method = self.cfg, setup.pair, setup.method
        trained = setup.state.get("trained")
        if trained is not None:
            setup.checkpoints.load_weights(pair.student)
            return Trained(TrainResult(**trained))
        self.say(f"training [bold]{method.name}[/] ({method.description})")
        context = PolicyContext(
            cfg, setup.task, pair.student, pair.teacher, pair.tokenizer, pair.vocab_size, self.dist.device,
            run_seeds(cfg.seed)["policy"],
        )  # fmt: skip
        policy = method.policy(context) if method.policy else None
        teacher = self._teacher_source(setup)
        curve = self._curve(setup)
        trainer = Trainer(
            Stage.kd(cfg, method), pair.student, teacher, setup.train_ex, vocab_size=pair.vocab_size,
            pad_id=pair.tokenizer.pad_token_id, policy=policy, checkpoints=setup.checkpoints,
            on_step=lambda row, step: self._after_step(setup, curve, row, step),
        )  # fmt: skip
        if curve is not None:
            curve.last = trainer.total
            curve.start(setup.checkpoints.latest_step() or 0)
        result = trainer.fit(setup.log_path, self.quiet)
        setup.state.put("trained", asdict(result))
        return Trained(result, policy, teacher)

    def _curve(self, setup: Setup) -> LearningCurve | None:
        """The training stage's learning curve (train.curve_every), or None without one."""
        cfg, pair = self.cfg, setup.pair
        if not cfg.train.curve_every:
            return None
        if pair.teacher is None:
            raise UserError(
                "train.curve_every scores the student against the teacher, which this run does not load "
                "(eval.reference=false with a method that trains without it): set eval.reference=true or "
                "train.curve_every=0"
            )
        examples = setup.eval.sets[0].forced[: cfg.train.curve_rows]
        return LearningCurve(
            setup.state.dir / CURVE_FILE, pair.student, pair.teacher, examples, pair.tokenizer.pad_token_id,
            pair.vocab_size, cfg.train.curve_every, last=0,
        )  # fmt: skip

    def _after_step(self, setup: Setup, curve: LearningCurve | None, row: dict[str, Any], step: int) -> None:
        """The trackers get every training-log row, and the curve's point when one is due."""
        setup.tracker.log_step(row, step)
        if curve is not None and curve.due(step):
            point = curve.point(step)
            setup.tracker.log_step({f"curve_{k}": v for k, v in point.items() if k != "step"}, step)

    def evaluate(self, setup: Setup) -> dict[str, EvalResult]:
        """Score the trained student (the evaluation stage `speckd-bench eval` runs too); keep its samples
        and weights in the run folder."""
        pair, folder = setup.pair, setup.state.dir
        after = evaluate_student(setup.scoring, pair.student, pair.tokenizer, "eval trained student", folder)
        if self.dist.is_main:
            save_final(pair.student, pair.tokenizer, folder / FINAL_CHECKPOINT)
        return after

    def lm_eval(self, setup: Setup) -> dict[str, Any] | None:
        """lm-eval's scores of the trained student. Each task name's scores go into the run's state as they
        finish, so a run interrupted in this stage and resumed scores only the names still missing."""
        state = setup.state

        def keep(name: str, scores: dict[str, Any]) -> None:
            state.put("lm_eval_done", {**state.get("lm_eval_done", {}), name: scores})

        pair, done = setup.pair, state.get("lm_eval_done", {})
        return lm_eval_scores(pair.student, pair.tokenizer, self.cfg, self.quiet, setup.run_id, done, keep)

    # --- the record -----------------------------------------------------------------------------------

    def record(
        self, setup: Setup, status: str, before: dict[str, dict[str, Any]], init: dict[str, Any]
    ) -> RunRecord:
        """The record of what the stages produced so far."""
        cfg, method, task, sets = self.cfg, setup.method, setup.task, setup.eval.sets
        facts = distributed_info(cfg, self.dist)
        train_file = setup.train_file
        return RunRecord(
            run_id=setup.run_id, status=status, task=task.name,
            main_metric=main_metric(cfg.eval.main_metric, task.metrics),
            config=portable_config(cfg.to_dict()), versions=versions(), hardware=hardware(),
            timings={**self.timings}, paths={"train_log": TRAIN_LOG, "checkpoints": CHECKPOINTS},
            created=setup.state.get("created"), method=method.name, seed=cfg.seed, **facts,
            method_info={
                "description": method.description, "paper": method.paper,
                "data_policy": method.data_policy, "uses_teacher": method.uses_teacher,
            },
            git_commit=git_commit(), models=setup.pair.info,
            data={
                "source": "mirror" if train_file.startswith("mirror:") else "hub",
                "train_file": train_file, "eval_file": sets[0].rows.source,
                "n_train": len(setup.train_ex), "n_eval": len(sets[0].examples),
                "train_target_tokens": sum(len(e.target_ids) for e in setup.train_ex),
                "eval_sets": setup.eval.info(),
                "task_sources": task_sources([task.name, *setup.eval.names]),
            },
            seeds={**run_seeds(cfg.seed), "eval": eval_seeds(cfg.eval)},
            resumed_from_step=setup.state.get("resumed_from_step", []),
            init=init,
            metrics={
                es.name: {"reference": setup.scoring.references.get(es.name, {}), **_before(before, es.name)}
                for es in sets
            },
        )  # fmt: skip

    def on_interrupt(self, setup: Setup, before: Before, exc: KeyboardInterrupt) -> NoReturn:
        """Write an 'interrupted' record that says how to continue, then stop with RunInterrupted."""
        state = setup.state
        record = self.record(setup, INTERRUPTED, state.get("before", {}), before.init)
        rows = read_log(setup.log_path) if setup.log_path.is_file() else []
        record.training = summarize_log(rows, self.cfg.train.spike_factor)
        record.timings["wall_s"] = self.wall_s(setup)
        state.put("wall_s", record.timings["wall_s"])
        command = f"speckd-bench run --resume {setup.run_id} --results-dir {self.results_dir}"
        record.resume = {"checkpoint_step": setup.checkpoints.latest_step(), "command": command}
        if self.dist.is_main:
            record.write(state.dir / RECORD_FILE)
        setup.tracker.finish()
        raise RunInterrupted(
            f"run {setup.run_id} {exc or 'interrupted'}; continue it with: {command}"
        ) from None

    def finish(
        self,
        setup: Setup,
        before: Before,
        trained: Trained,
        after: dict[str, EvalResult],
        lm_eval: dict[str, Any] | None,
    ) -> Path:
        """Write the complete record, drop the resumable checkpoints, print the summary."""
        cfg, dist, res = self.cfg, self.dist, trained.result
        path = setup.state.dir / RECORD_FILE
        record = self.record(setup, COMPLETE, before.scores, before.init)
        record.training = summarize_log(read_log(setup.log_path), cfg.train.spike_factor)
        curve = read_curve(setup.state.dir / CURVE_FILE)
        if res.diverged_at is not None:
            record.training["diverged_at_step"] = res.diverged_at
        record.lm_eval = lm_eval
        setup.tracker.log_lm_eval(lm_eval, res.steps)
        record.timings.update(self._timings(setup, before, res, after))
        for name, result in after.items():
            record.metrics[name]["after"] = result.summary()
        record.policy = trained.policy.summary() if trained.policy else {}
        used = isinstance(trained.teacher, teacher_cache.CachedTeacher)
        record.teacher_cache = trained.teacher.info if used else {"used": False}
        record.paths = {"train_log": TRAIN_LOG, "samples": SAMPLES_FILE, "checkpoint": FINAL_CHECKPOINT}
        if curve:  # its points, and the seconds they took (inside train_s)
            record.training["curve"] = curve
            record.paths["curve"] = CURVE_FILE
            record.timings["curve_s"] = sum(p.get("seconds", 0.0) for p in curve)
        if dist.is_main:
            record.write(path)
            setup.checkpoints.remove()  # the record is complete, nothing left to resume; weights stay
            setup.state.release(complete=True)
        setup.tracker.log_final(record.metrics, res.steps)
        setup.tracker.finish()
        if res.diverged_at is None:  # a divergence is reported by its error line instead
            self._summary(setup, before, after, record, path)
        if res.diverged_at is not None:
            raise UserError(
                f"run {setup.run_id} diverged: non-finite loss at training step {res.diverged_at}; its "
                f"record keeps the last good weights (step {res.steps}): lower train.lr (now "
                f"{cfg.train.lr:g}) and run again"
            )
        return path

    def wall_s(self, setup: Setup) -> float:
        """Wall time of every session of this run: the earlier ones (interrupted) and this one."""
        return setup.wall_before + time.perf_counter() - self.wall0

    def _timings(
        self, setup: Setup, before: Before, res: TrainResult, after: dict[str, EvalResult]
    ) -> dict[str, float]:
        stages = [b for per_set in before.scores.values() for b in per_set.values()]
        after_seconds, after_tokens = eval_speed(after)
        eval_tokens = after_tokens + sum(b.get("new_tokens", 0) for b in stages)
        eval_seconds = after_seconds + sum(b.get("seconds", 0.0) for b in stages)
        return {
            "wall_s": self.wall_s(setup),
            "train_s": res.seconds,
            "train_tokens_per_s": res.tokens_per_s,
            "train_target_tokens": res.target_tokens,
            "eval_s": after_seconds,
            "eval_tokens_per_s": eval_tokens / eval_seconds if eval_seconds else 0.0,
        }

    def _summary(
        self, setup: Setup, before: Before, after: dict[str, EvalResult], record: RunRecord, path: Path
    ) -> None:
        """The result in a few lines (engine/summary.py), said by the main process."""
        sets = [(es.name, es.task.metrics) for es in setup.eval.sets]
        after_summaries = {name: result.summary() for name, result in after.items()}
        lines = summary_lines(
            sets, record.main_metric, before.scores, after_summaries, record.lm_eval,
            record.timings["wall_s"], path,
        )  # fmt: skip
        if self.dist.is_main:
            print_summary(lines, self.quiet)


def build_run_config(**kwargs: Any) -> RunConfig:
    """config.build_config with the registered methods' and tasks' own defaults (what `run` resolves)."""
    return build_config(method_config=method_config, task_defaults=run_defaults, **kwargs)


def run_once(
    cfg: RunConfig, quiet: bool = False, resume: Path | None = None, report_to: list[str] | None = None
) -> Path:
    """Train, evaluate and record one seed; returns the record's path (see RunRecipe)."""
    return RunRecipe(cfg, quiet, resume, report_to).run()
