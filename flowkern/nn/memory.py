"""O(1)-memory backward through a sequence of invertible blocks.

:class:`InvertibleSequenceFunction` runs every block under ``no_grad`` and saves only
the final output z (and the condition). Its backward walks the blocks in reverse: each
block rebuilds its input from its output with the inverse, re-runs its forward with grad
and back-propagates (grad_y, grad_logdet) — the log-det's gradient included — through
that block only (:meth:`flowkern.nn.base.InvertibleModule.invert_and_backprop`), then
frees it. Saved memory is therefore independent of depth. The flow's parameters are
inputs of the Function, so their grads arrive through the normal ``AccumulateGrad``
path (optimisers, hooks and DistributedDataParallel's all-reduce work unchanged).

Blocks must be deterministic (no dropout) for the rebuilt inputs to match.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..spec import acc_dtype
from .base import InvertibleModule, ParamGrads, trainable_parameters

__all__ = ["InvertibleSequenceFunction", "memory_saving_forward"]


class InvertibleSequenceFunction(torch.autograd.Function):
    """apply(blocks, x, c, *params) -> (z, logdet); params: the trainable parameters of blocks."""

    @staticmethod
    def forward(ctx, blocks: Sequence[InvertibleModule], x: torch.Tensor, c: torch.Tensor | None,
                *params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = x
        logdet = torch.zeros(x.shape[0], dtype=acc_dtype(x.dtype), device=x.device)
        for block in blocks:
            z, ld = block(z, c)
            logdet = logdet + ld
        if z is x:
            z = x.clone()
        ctx.blocks = blocks
        ctx.params = params
        ctx.save_for_backward(z, c)
        return z, logdet

    @staticmethod
    def backward(ctx, grad_z: torch.Tensor | None, grad_logdet: torch.Tensor | None):
        z, c = ctx.saved_tensors
        if grad_z is None:
            grad_z = torch.zeros_like(z)
        if grad_logdet is None:
            grad_logdet = torch.zeros(z.shape[0], dtype=acc_dtype(z.dtype), device=z.device)
        want_c = c is not None and ctx.needs_input_grad[2]
        c_in = c.detach().requires_grad_(True) if want_c else c
        grads = ParamGrads()
        grad_c = None
        y, grad_y = z.detach(), grad_z
        for block in reversed(ctx.blocks):
            y, grad_y, gc = block.invert_and_backprop(y, c_in, grad_y, grad_logdet, grads)
            if gc is not None:
                grad_c = gc if grad_c is None else grad_c + gc
        grad_x = grad_y if ctx.needs_input_grad[1] else None
        if want_c and grad_c is None:
            grad_c = torch.zeros_like(c)
        param_grads = tuple(grads.get(id(p)) for p in ctx.params)
        return (None, grad_x, grad_c, *param_grads)


def memory_saving_forward(blocks: Sequence[InvertibleModule], x: torch.Tensor,
                          c: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward through ``blocks`` keeping O(1) activations for backward (module docstring)."""
    return InvertibleSequenceFunction.apply(tuple(blocks), x, c, *trainable_parameters(*blocks))
