"""speckd-bench: a benchmark harness for knowledge distillation of language models (SpecKD and baselines)."""

__version__ = "0.1.0"
