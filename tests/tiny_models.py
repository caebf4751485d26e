"""A tiny random Llama (vocab 40) for loss and gradient tests."""

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def tiny_llama(seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=40,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        pad_token_id=0,
    )
    return LlamaForCausalLM(config)
