"""A loss over the output layer computed chunk by chunk, so the [tokens, vocabulary] logits never exist
at once (the memory-lean path).

The forward pass walks the target positions in chunks of `rows`: it forms that chunk's logits from the
hidden states and the output weights, asks `loss_fn` for the chunk's loss, takes the gradient of that
loss with respect to the chunk's logits with autograd (so every divergence, gate and cross-entropy keeps
its own exact gradient), and folds it into the gradients of the hidden states and the weights right away.
Backward then only scales those stored gradients. Peak extra memory: one chunk of logits and its
temporaries, plus one gradient buffer the size of the output weights.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

ChunkLoss = Callable[[torch.Tensor, slice], torch.Tensor]
"""(float32 logits of the chunk's rows [c, V], the rows' slice) -> the chunk's scalar loss sum."""

LOGITS_PER_CHUNK = 1 << 25
"""At most about 128 MiB of float32 logits per chunk: big enough to keep the matmuls fast."""
MEMORY_SHARE = 1 / 4
"""A chunk and its temporaries may take this share of the memory free when the loss starts."""
LOGIT_COPIES = 10
"""[rows, vocabulary] float32 tensors alive at once per chunk: the student's and the teacher's logits, the
logits' gradient, the log-probabilities and the divergence's temporaries (about 9 measured on an H200)."""


def free_memory(device: torch.device) -> int:
    """Bytes free for new tensors: on CUDA the driver's free memory, on a CPU the available RAM."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    import psutil  # here, not at the top: a bare GPU machine may lack it and never gets here

    return psutil.virtual_memory().available


def chunk_rows(vocab_size: int, requested: int = 0, device: torch.device | None = None) -> int:
    """Rows per chunk: `requested` when positive; else about LOGITS_PER_CHUNK logits, fewer when a chunk's
    LOGIT_COPIES float32 copies would take more than MEMORY_SHARE of the device's free memory."""
    if requested > 0:
        return requested
    rows = LOGITS_PER_CHUNK // vocab_size
    if device is not None:
        rows = min(rows, int(free_memory(device) * MEMORY_SHARE) // (4 * LOGIT_COPIES * vocab_size))
    return max(1, rows)


class _ChunkedHeadLoss(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        loss_fn: ChunkLoss,
        rows: int,
    ) -> torch.Tensor:
        needs_grad = ctx.needs_input_grad
        grad_hidden = torch.zeros_like(hidden, dtype=torch.float32) if needs_grad[0] else None
        # the weights' own dtype, like autograd's; float32 for float32 weights under autocast
        grad_weight = torch.zeros_like(weight) if needs_grad[1] else None
        grad_bias = (
            torch.zeros_like(bias, dtype=torch.float32) if bias is not None and needs_grad[2] else None
        )
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], rows):
            part = slice(start, min(start + rows, hidden.shape[0]))
            h = hidden[part]
            logits = F.linear(h, weight, bias).float().requires_grad_()
            with torch.enable_grad():
                loss = loss_fn(logits, part)
            (grad_logits,) = torch.autograd.grad(loss, logits)
            total += loss.detach()
            if grad_bias is not None:
                grad_bias += grad_logits.sum(0)
            grad_logits = grad_logits.to(h.dtype)  # one cast, shared by both products
            if grad_hidden is not None:
                grad_hidden[part] = grad_logits @ weight.to(h.dtype)
            if grad_weight is not None:
                # product then sum, not addmm_: that rounds differently, and every earlier run (and
                # cached warm start, whose key cannot tell) was trained with this order
                grad_weight += grad_logits.T @ h
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        ctx.dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        return total

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor):
        grads = [
            None if g is None else (g * grad_out).to(dtype)
            for g, dtype in zip(ctx.saved_tensors, ctx.dtypes, strict=True)
        ]
        return (*grads, None, None)


def chunked_head_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    loss_fn: ChunkLoss,
    rows: int,
) -> torch.Tensor:
    """sum over chunks of loss_fn(hidden[chunk] @ weight.T + bias, chunk), differentiable with respect to
    hidden, weight and bias, without ever holding more than one chunk of logits.

    `loss_fn` runs in the forward pass only (its gradient is taken there), so it may draw random numbers
    and record statistics as side effects exactly once per chunk.
    """
    return _ChunkedHeadLoss.apply(hidden, weight, bias, loss_fn, rows)
