"""Autograd glue shared by every compiled implementation of the coupling ops.

Forward ops take ``(input, s_raw, t, a, b, *cfg)`` and return ``(out, logdet[, err])``;
their backward ops take ``(grad_out, grad_logdet, input, s_raw, t, a, b, *cfg)`` and return
``(grad_input, grad_s_raw, grad_t, grad_a, grad_b)`` (grad_a/grad_b empty without actnorm).
The packed ops take ``(input, h, a, b, *cfg)`` (h = [s_raw | t]) and return
``(grad_input, grad_h, grad_a, grad_b)``: ``n_tensors`` is 5 or 4.

:func:`register` attaches the backward with ``torch.library.register_autograd`` (what
``torch.compile``, ``opcheck`` and ``torch.func`` use); :func:`call` runs an op with autograd,
in eager mode through the op's C++ twin ``flowkern::<op>_eager`` (csrc/eager_autograd.cpp),
which calls the same forward and backward ops.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .spec import acc_dtype

__all__ = ["make_setup_context", "make_backward", "register", "eager_entry", "call"]


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


# registered op -> its C++ eager twin (csrc/eager_autograd.cpp) and that twin's unboxed entry in
# flowkern._C (csrc/python/module.cpp), or None
_EAGER: dict[torch._ops.OpOverload, tuple[torch._ops.OpOverload, Callable | None]] = {}


def register(fwd_op: torch._ops.OpOverload, bwd_op: Callable, n_tensors: int,
             eager_op: torch._ops.OpOverload, eager_entry: Callable | None = None) -> None:
    """``register_autograd`` of ``fwd_op`` with ``bwd_op`` (what torch.compile, opcheck and torch.func
    use); :func:`call` runs ``eager_op`` instead in plain eager mode: the same schema, forward and
    backward ops, with the autograd node built in C++. ``eager_entry`` calls ``eager_op`` with
    unboxed arguments (same dispatcher call, without torch.ops' boxing)."""
    torch.library.register_autograd(fwd_op, make_backward(bwd_op, n_tensors),
                                    setup_context=make_setup_context(n_tensors))
    _EAGER[fwd_op] = (eager_op, eager_entry)


def eager_entry(fwd_op: torch._ops.OpOverload) -> Callable | None:
    """The unboxed entry of ``fwd_op``'s C++ eager twin (None if the extension lacks it)."""
    return _EAGER[fwd_op][1]


def call(fwd_op: torch._ops.OpOverload, *args) -> tuple:
    """``fwd_op(*args)`` with autograd. In eager mode this runs its C++ eager twin: torch's Python
    kernel for a ``register_autograd`` formula costs ~5 us per call even when nothing needs a
    gradient, and a Python autograd node ~40 us per forward + backward; under torch.compile and
    torch.func transforms it is the registered op. Arguments with ``__torch_function__`` overrides
    (tensor subclasses, torch function modes) go through torch.ops, which dispatches those.
    ``flowkern.ops.coupling._eager`` repeats this routing inline (keep the two in step)."""
    if torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active():
        return fwd_op(*args)
    eager_op, entry = _EAGER[fwd_op]
    if entry is None or torch._C._has_torch_function(args):
        return eager_op(*args)
    return entry(*args)
