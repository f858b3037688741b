"""The autograd formula of the Triton coupling ops, registered once per op (the C++ / CUDA ops
have the same formula in C++, at the Autograd dispatch key: ``csrc/autograd.cpp``).

Forward ops take ``(input, s_raw, t, a, b, *cfg, inverse, check)`` and return
``(out, logdet, err)``; their backward ops take ``(grad_out, grad_logdet, input, s_raw, t, a, b,
*cfg, inverse)`` and return ``(grad_input, grad_s_raw, grad_t, grad_a, grad_b)`` (grad_a / grad_b
empty without actnorm). Packed overloads take h = [s_raw | t] in place of (s_raw, t) and return
``(grad_input, grad_h, grad_a, grad_b)``: ``n_tensors`` (the leading tensor inputs) is 5 or 4.
"""

from __future__ import annotations

import torch

from ..spec import acc_dtype

__all__ = ["register"]

_N_CFG = 6  # split, passive, scale, clamp, atan_k, eps


def register(fwd_op, bwd_op, n_tensors: int) -> None:
    """``torch.library.register_autograd(fwd_op, ...)`` with ``bwd_op`` as its one fused backward pass
    (what eager autograd, ``torch.compile``, ``opcheck`` and ``torch.func`` all use)."""

    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(*inputs[:n_tensors])
        ctx.cfg_args = inputs[n_tensors:n_tensors + _N_CFG + 1]  # the config and ``inverse``
        ctx.has_ab = inputs[n_tensors - 1] is not None
        ctx.n_inputs = len(inputs)

    def backward(ctx, grad_out, grad_logdet, grad_err):
        saved = ctx.saved_tensors
        inp = saved[0]
        if grad_out is None:
            grad_out = torch.zeros_like(inp)
        if grad_logdet is None:
            grad_logdet = inp.new_zeros((inp.shape[0],), dtype=acc_dtype(inp.dtype))
        grads = list(bwd_op(grad_out.contiguous(), grad_logdet.contiguous(), *saved, *ctx.cfg_args))
        if not ctx.has_ab:
            grads[-2:] = [None, None]
        return (*grads, *(None,) * (ctx.n_inputs - n_tensors))

    torch.library.register_autograd(fwd_op, backward, setup_context=setup_context)
