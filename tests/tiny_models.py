"""Tiny random Llamas for loss, gradient, decoding and policy tests (vocab 40 unless told otherwise)."""

from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def tiny_llama(seed: int, cls: type[LlamaForCausalLM] = LlamaForCausalLM, **config: Any) -> LlamaForCausalLM:
    """A `cls` of a 1-layer, hidden-16 Llama config (`config` overrides any key), initialised from `seed`."""
    torch.manual_seed(seed)
    settings = {
        "vocab_size": 40,
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "pad_token_id": 0,
        **config,
    }
    return cls(LlamaConfig(**settings))
