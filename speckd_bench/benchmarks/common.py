"""What the benchmarks share: the real model shapes they time, the machine and versions they print, and
a markdown table."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from typing import Any

import torch
import transformers
from transformers import LlamaConfig, Qwen2Config

# Qwen2.5 sizes of the qwen2.5-1.5b-to-0.5b preset: (hidden, intermediate, layers, attention heads)
QWEN25 = {"1.5b": (1536, 8960, 28, 12), "0.5b": (896, 4864, 24, 14)}


def qwen25_config(size: str) -> Qwen2Config:
    """A Qwen2.5 config of the hub model's shape (vocabulary 151936, tied embeddings), for random init."""
    hidden, inter, layers, heads = QWEN25[size]
    return Qwen2Config(
        vocab_size=151936,
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        rope_theta=1_000_000.0,
        tie_word_embeddings=True,
        eos_token_id=151643,
        pad_token_id=151643,
    )


def llama_config(hidden: int, layers: int, heads: int, kv: int, inter: int, vocab: int) -> LlamaConfig:
    """A Llama config with tied embeddings (SmolLM2's layout), for random init."""
    return LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        intermediate_size=inter,
        tie_word_embeddings=True,
    )


def timed_decode(fn: Callable[[], list[list[int]]], device: torch.device) -> tuple[list[list[int]], float]:
    """(fn's token lists, its wall seconds); the device is idle when the clock starts, and the token lists
    are on the host when fn returns, so the time is the decode's own."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def machine() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def machine_header(title: str, facts: dict[str, Any]) -> str:
    lines = [f"## {title}", "", f"- machine: {machine()}"]
    versions = f"torch {torch.__version__}, transformers {transformers.__version__}"
    lines.append(f"- {versions}, python {platform.python_version()}")
    lines += [f"- {key}: {value}" for key, value in facts.items()]
    return "\n".join(lines)


def markdown_table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> str:
    """columns: (row key, header, format spec); NaN cells read n/a."""
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = ["n/a" if row[key] != row[key] else fmt.format(row[key]) for key, _, fmt in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
