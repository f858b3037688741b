"""Autograd glue shared by every compiled implementation of the coupling ops.

Forward ops take ``(input, s_raw, t, a, b, *cfg)`` and return ``(out, logdet[, err])``;
their backward ops take ``(grad_out, grad_logdet, input, s_raw, t, a, b, *cfg)`` and return
``(grad_input, grad_s_raw, grad_t, grad_a, grad_b)`` (grad_a/grad_b empty without actnorm).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .spec import acc_dtype

__all__ = ["setup_context", "make_backward"]


def setup_context(ctx, inputs, output) -> None:
    """Save the five tensor inputs; keep the six config scalars for the backward op."""
    ctx.save_for_backward(*inputs[:5])
    ctx.cfg_args = inputs[5:11]
    ctx.has_ab = inputs[3] is not None
    ctx.n_inputs = len(inputs)


def make_backward(bwd_op: Callable) -> Callable:
    """The ``register_autograd`` backward that calls ``bwd_op`` (one fused pass)."""

    def backward(ctx, grad_main, grad_logdet, *grad_err):
        inp, s_raw, t, a, b = ctx.saved_tensors
        if grad_main is None:
            grad_main = torch.zeros_like(inp)
        if grad_logdet is None:
            grad_logdet = inp.new_zeros((inp.shape[0],), dtype=acc_dtype(inp.dtype))
        g_in, g_s, g_t, g_a, g_b = bwd_op(grad_main.contiguous(), grad_logdet.contiguous(),
                                           inp, s_raw, t, a, b, *ctx.cfg_args)
        if not ctx.has_ab:
            g_a = g_b = None
        return (g_in, g_s, g_t, g_a, g_b) + (None,) * (ctx.n_inputs - 5)

    return backward
