r"""The fused actnorm + affine coupling + log-det op.

For x of shape (B, C, \*S) split at ``split`` into a passive side (p) and an active side (a):

.. math::

    z = x \odot a + b, \quad y_p = z_p, \quad y_a = z_a \odot e^{f(s_{raw})} + t, \quad
    \log|\det J| = \textstyle\prod S \sum_c \log|a_c| + \sum f(s_{raw})

(the spec: :mod:`flowkern.backends.reference`). Every function here takes the same path:
build and validate the :class:`~flowkern.spec.CouplingConfig`, check the tensors (one place,
:mod:`flowkern.spec`), choose a backend (:func:`flowkern.backends.select`) and run it —
``torch.ops.flowkern.coupling`` on CPU / CUDA, the Triton op, or the reference.
"""

from __future__ import annotations

import math

import torch

from .. import backends
from ..spec import CouplingConfig, check_coupling_args, check_packed_args

__all__ = ["coupling_forward", "coupling_inverse", "coupling_forward_packed", "coupling_inverse_packed"]


def _run(inverse: bool, inp, s_raw, t, a, b, cfg: CouplingConfig, check: bool, backend: str | None) -> tuple:
    """Check the arguments, choose the backend and run it; ``t is None``: ``s_raw`` is the packed h."""
    name = "y" if inverse else "x"
    if not isinstance(inp, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(inp).__name__}")
    chosen = backends.select(inp.device, backend)
    if t is None:
        c_act = check_packed_args(inp, s_raw, a, b, cfg, name)
        if chosen.run_packed is not None:
            out = chosen.run_packed(inp, s_raw, a, b, cfg, inverse, check)
        else:
            out = chosen.run(inp, s_raw[:, :c_act], s_raw[:, c_act:], a, b, cfg, inverse, check)
    else:
        check_coupling_args(inp, s_raw, t, a, b, cfg, name)
        out = chosen.run(inp, s_raw, t, a, b, cfg, inverse, check)
    return tuple(out) if check else (out[0], out[1])


def coupling_forward(
    x: torch.Tensor,
    s_raw: torch.Tensor,
    t: torch.Tensor,
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    *,
    split: int,
    passive: str = "first",
    scale: str = "tanh",
    clamp: float = 1.0,
    atan_k: float = 2.0 / math.pi,
    eps: float = 0.0,
    check: bool = False,
    backend: str | None = None,
) -> tuple[torch.Tensor, ...]:
    """Fused actnorm + affine coupling: ``(y, logdet)``, or ``(y, logdet, err)`` with ``check``.

    Args:
        x: (B, C, *S) float16 / bfloat16 / float32 / float64.
        s_raw, t: (B, C_active, *S) like x (any strides: views of a subnet output are not copied).
        a, b: (C,) actnorm scale and shift, or both None.
        split, passive, scale, clamp, atan_k, eps: see :class:`~flowkern.spec.CouplingConfig`.
        check: also return ``err`` (B,) = max |x_rebuilt - x| per sample, x rebuilt from y in the
            same pass.
        backend: force one backend (see :mod:`flowkern.backends`).

    Returns y (B, C, *S) and logdet (B,) in float32 (float64 for float64 x).
    """
    cfg = CouplingConfig(split, passive, scale, clamp, atan_k, eps)
    return _run(False, x, s_raw, t, a, b, cfg, bool(check), backend)


def coupling_inverse(
    y: torch.Tensor,
    s_raw: torch.Tensor,
    t: torch.Tensor,
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    *,
    split: int,
    passive: str = "first",
    scale: str = "tanh",
    clamp: float = 1.0,
    atan_k: float = 2.0 / math.pi,
    eps: float = 0.0,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`coupling_forward`: ``(x, -logdet)``.

    z_a = (y_a - t) exp(-f(s_raw)), z_p = y_p;  x = (z - b) / a.
    """
    cfg = CouplingConfig(split, passive, scale, clamp, atan_k, eps)
    return _run(True, y, s_raw, t, a, b, cfg, False, backend)


def coupling_forward_packed(
    x: torch.Tensor,
    h: torch.Tensor,
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    *,
    split: int,
    passive: str = "first",
    scale: str = "tanh",
    clamp: float = 1.0,
    atan_k: float = 2.0 / math.pi,
    eps: float = 0.0,
    check: bool = False,
    backend: str | None = None,
) -> tuple[torch.Tensor, ...]:
    """:func:`coupling_forward` with s_raw, t the halves of one subnet output
    h = [s_raw | t] of shape (B, 2 C_active, *S) (FrEIA's / CompVis' layout).

    Same values as ``coupling_forward(x, h[:, :C_a], h[:, C_a:], ...)``; on the compiled backends
    the backward writes one grad_h instead of two per-view grads that autograd would scatter
    into zeros and add.
    """
    cfg = CouplingConfig(split, passive, scale, clamp, atan_k, eps)
    return _run(False, x, h, None, a, b, cfg, bool(check), backend)


def coupling_inverse_packed(
    y: torch.Tensor,
    h: torch.Tensor,
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    *,
    split: int,
    passive: str = "first",
    scale: str = "tanh",
    clamp: float = 1.0,
    atan_k: float = 2.0 / math.pi,
    eps: float = 0.0,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`coupling_inverse` with the packed subnet output h = [s_raw | t] (see
    :func:`coupling_forward_packed`)."""
    cfg = CouplingConfig(split, passive, scale, clamp, atan_k, eps)
    return _run(True, y, h, None, a, b, cfg, False, backend)
