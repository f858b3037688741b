"""Autograd glue shared by every compiled implementation of the coupling ops.

Forward ops take ``(input, s_raw, t, a, b, *cfg)`` and return ``(out, logdet[, err])``;
their backward ops take ``(grad_out, grad_logdet, input, s_raw, t, a, b, *cfg)`` and return
``(grad_input, grad_s_raw, grad_t, grad_a, grad_b)`` (grad_a/grad_b empty without actnorm).
The packed ops take ``(input, h, a, b, *cfg)`` (h = [s_raw | t]) and return
``(grad_input, grad_h, grad_a, grad_b)``: ``n_tensors`` is 5 or 4.

:func:`register` attaches the backward with ``torch.library.register_autograd`` (what
``torch.compile`` and ``opcheck`` use); :func:`call` runs an op with autograd, taking a
shorter path in eager mode with the very same ``setup_context`` / ``backward``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .spec import acc_dtype

__all__ = ["make_setup_context", "make_backward", "register", "call"]


def make_setup_context(n_tensors: int = 5) -> Callable:
    """Save the ``n_tensors`` tensor inputs; keep the six config scalars for the backward op."""

    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(*inputs[:n_tensors])
        ctx.cfg_args = inputs[n_tensors:n_tensors + 6]
        ctx.has_ab = inputs[n_tensors - 2] is not None
        ctx.n_inputs = len(inputs)

    return setup_context


def make_backward(bwd_op: Callable, n_tensors: int = 5) -> Callable:
    """The ``register_autograd`` backward that calls ``bwd_op`` (one fused pass)."""

    def backward(ctx, grad_main, grad_logdet, *grad_err):
        saved = ctx.saved_tensors
        inp = saved[0]
        if grad_main is None:
            grad_main = torch.zeros_like(inp)
        if grad_logdet is None:
            grad_logdet = inp.new_zeros((inp.shape[0],), dtype=acc_dtype(inp.dtype))
        grads = list(bwd_op(grad_main.contiguous(), grad_logdet.contiguous(), *saved, *ctx.cfg_args))
        if not ctx.has_ab:
            grads[-2:] = [None, None]
        return tuple(grads) + (None,) * (ctx.n_inputs - n_tensors)

    return backward


# op -> (n_tensors, setup_context, backward)
_EAGER: dict[Callable, tuple[int, Callable, Callable]] = {}


def register(fwd_op: torch._ops.OpOverload, bwd_op: Callable, n_tensors: int) -> None:
    """``register_autograd`` of ``fwd_op`` with ``bwd_op``; also enables :func:`call`'s eager path."""
    setup, backward = make_setup_context(n_tensors), make_backward(bwd_op, n_tensors)
    torch.library.register_autograd(fwd_op, backward, setup_context=setup)
    _EAGER[fwd_op] = (n_tensors, setup, backward)


class _EagerOp(torch.autograd.Function):
    """One registered op under eager autograd. torch's generic wrapper around a
    ``register_autograd`` backward re-binds the schema's 11-12 arguments on every call
    (~50 us on this machine); this calls the same setup_context and backward directly."""

    @staticmethod
    def forward(ctx, fwd_op, *args):
        _, setup, backward = _EAGER[fwd_op]
        out = fwd_op(*args)  # grad mode is off here: the op's autograd kernel just redispatches
        setup(ctx, args, out)
        ctx.eager_backward = backward
        ctx.set_materialize_grads(False)
        if len(out) == 3:
            ctx.mark_non_differentiable(out[2])
        return tuple(out)

    @staticmethod
    def backward(ctx, *grads):
        return (None,) + ctx.eager_backward(ctx, *grads)


def call(fwd_op: torch._ops.OpOverload, *args) -> tuple:
    """``fwd_op(*args)`` with autograd: through :class:`_EagerOp` when eager autograd will
    record it, else the registered op (torch.compile, torch.func transforms, no grad)."""
    n = _EAGER[fwd_op][0]
    if (torch.is_grad_enabled() and not torch.compiler.is_compiling()
            and not torch._C._are_functorch_transforms_active()
            and any(isinstance(v, torch.Tensor) and v.requires_grad for v in args[:n])):
        return _EagerOp.apply(fwd_op, *args)
    return fwd_op(*args)
