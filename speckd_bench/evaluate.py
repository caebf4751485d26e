"""Evaluate a student on one eval set: generate for every prompt (once per eval seed when sampling),
score with the task's metrics, and return metrics plus the samples (prompt, references, output).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from speckd_bench.config import EvalConfig
from speckd_bench.data import Example
from speckd_bench.generate import generate
from speckd_bench.metrics import score


@dataclass
class EvalResult:
    metrics: dict[str, float]
    """Mean over eval seeds of each corpus metric."""
    per_seed: dict[int, dict[str, float]]
    std: dict[str, float]
    new_tokens: int
    seconds: float
    samples: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "metrics": self.metrics,
            "std_over_eval_seeds": self.std,
            "per_seed": {str(k): v for k, v in self.per_seed.items()},
            "new_tokens": self.new_tokens,
            "seconds": self.seconds,
            "tokens_per_s": self.new_tokens / self.seconds if self.seconds else 0.0,
        }


def eval_seeds(cfg: EvalConfig) -> list[int]:
    """Greedy decoding is deterministic: one pass with the first seed; sampling: one pass per seed."""
    return list(cfg.seeds) if cfg.decoding == "sample" else list(cfg.seeds[:1])


def evaluate(
    model: Any,
    tokenizer: Any,
    examples: list[Example],
    metric_names: tuple[str, ...],
    cfg: EvalConfig,
    label: str,
    quiet: bool,
) -> EvalResult:
    per_seed: dict[int, dict[str, float]] = {}
    samples: list[dict[str, Any]] = []
    new_tokens, seconds = 0, 0.0
    references = [e.references for e in examples]
    for seed in eval_seeds(cfg):
        gen = generate(
            model, tokenizer, [e.prompt_ids for e in examples], cfg, seed, f"{label} (seed {seed})", quiet
        )
        scored = score(metric_names, gen.texts, references)
        per_seed[seed] = scored["corpus"]
        new_tokens, seconds = new_tokens + gen.new_tokens, seconds + gen.seconds
        for i, (ex, text) in enumerate(zip(examples, gen.texts, strict=True)):
            sample = {
                "index": i,
                "eval_seed": seed,
                "prompt": ex.prompt,
                "references": ex.references,
                "output": text,
            }
            sample["scores"] = {name: values[i] for name, values in scored["per_example"].items()}
            samples.append(sample)
    names = list(next(iter(per_seed.values())))
    mean = {n: statistics.fmean(s[n] for s in per_seed.values()) for n in names}
    std = {n: statistics.pstdev([s[n] for s in per_seed.values()]) for n in names}
    return EvalResult(mean, per_seed, std, new_tokens, seconds, samples)
