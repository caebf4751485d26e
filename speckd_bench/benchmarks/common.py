"""What every benchmark prints with its numbers: the machine, the versions, and a markdown table."""

from __future__ import annotations

import platform
from typing import Any

import torch
import transformers


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
