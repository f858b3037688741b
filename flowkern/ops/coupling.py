r"""The fused actnorm + affine coupling + log-det op.

For x of shape (B, C, \*S) split at ``split`` into a passive side (p) and an active side (a):

.. math::

    z = x \odot a + b, \quad y_p = z_p, \quad y_a = z_a \odot e^{f(s_{raw})} + t, \quad
    \log|\det J| = \textstyle\prod S \sum_c \log|a_c| + \sum f(s_{raw})

(the spec: :mod:`flowkern.backends.reference`). Every function here takes the same path: choose a
backend (:func:`flowkern.backends.select`) and hand it the tensors and the six config scalars. Each
backend checks its arguments once, with the same rules and messages (naming the argument): the
compiled ops in C++ (``csrc/ops_check.h``), the others with :mod:`flowkern.spec`. A call the
compiled op's binding rejects before its checks run (a config scalar of the wrong Python type) is
diagnosed by :mod:`flowkern.spec`'s checks, so it fails with flowkern's error too.

The config keywords (``split``, ``passive``, ``scale``, ``clamp``, ``atan_k``, ``eps``) have one
source of defaults, :class:`flowkern.spec.CouplingConfig`; they are installed on the four
functions' keyword defaults at import (no per-call cost).
"""

from __future__ import annotations

import torch

from .. import backends
from ..spec import CONFIG_DEFAULTS, check_call

__all__ = ["coupling_forward", "coupling_inverse", "coupling_forward_packed", "coupling_inverse_packed"]

PACKED = None  # the backends' ``t`` for a packed call: ``s_raw`` is the whole subnet output h = [s_raw | t]


def _run(inverse: bool, inp, s_raw, t, a, b, cfg: tuple, check: bool, backend: str | None) -> tuple:
    """Choose the backend and run it; ``t is PACKED``: ``s_raw`` is the packed h; ``cfg`` holds the
    schema's six config scalars (:attr:`flowkern.spec.CouplingConfig.schema_args` order)."""
    if not isinstance(inp, torch.Tensor):
        raise TypeError(f"{'y' if inverse else 'x'} must be a torch.Tensor, got {type(inp).__name__}")
    chosen = backends.select(inp.device, backend)
    if bool in (type(cfg[0]), type(cfg[3]), type(cfg[4]), type(cfg[5])):  # the binding takes True for 1
        check_call(inp, s_raw, t, a, b, cfg, inverse)
    try:
        out = chosen.run(inp, s_raw, t, a, b, cfg, inverse, check)
    except RuntimeError:  # e.g. the op's binding refused an argument: say which, as every backend does
        check_call(inp, s_raw, t, a, b, cfg, inverse)
        raise
    return tuple(out) if check else (out[0], out[1])


def _separate(t: object) -> object:
    """``t`` of a call with separate (s_raw, t): a tensor, never the packed marker."""
    if t is PACKED:
        raise TypeError("t must be a torch.Tensor, got None: for one subnet output h = [s_raw | t] "
                        "call the _packed form of the op")
    return t


def coupling_forward(x: torch.Tensor, s_raw: torch.Tensor, t: torch.Tensor, a: torch.Tensor | None = None,
                     b: torch.Tensor | None = None, *, split: int, passive: str, scale: str, clamp: float,
                     atan_k: float, eps: float, check: bool = False, backend: str | None = None
                     ) -> tuple[torch.Tensor, ...]:
    r"""Fused actnorm + affine coupling (module docstring): ``(y, logdet)``, or ``(y, logdet, err)``
    with ``check``.

    Args:
        x: (B, C, *S) float16 / bfloat16 / float32 / float64.
        s_raw, t: (B, C_active, *S) like x (any strides: views of a subnet output are not copied).
        a, b: (C,) actnorm scale and shift, or both None.
        split, passive, scale, clamp, atan_k, eps: see :class:`~flowkern.spec.CouplingConfig`
            (defaults: passive ``"first"``, scale ``"tanh"``, clamp 1, atan_k 2/pi, eps 0).
        check: also return ``err`` (B,) = max |x_rebuilt - x| per sample, x rebuilt from y in the
            same pass.
        backend: force one backend (see :mod:`flowkern.backends`).

    Returns y (B, C, *S) and logdet (B,) in float32 (float64 for float64 x).

    Example:
        >>> x, s, t = torch.randn(2, 4), torch.randn(2, 2), torch.randn(2, 2)
        >>> y, logdet = coupling_forward(x, s, t, split=2)
        >>> torch.equal(y[:, :2], x[:, :2]), tuple(logdet.shape)
        (True, (2,))
    """
    return _run(False, x, s_raw, _separate(t), a, b, (split, passive, scale, clamp, atan_k, eps), bool(check),
                backend)


def coupling_inverse(y: torch.Tensor, s_raw: torch.Tensor, t: torch.Tensor, a: torch.Tensor | None = None,
                     b: torch.Tensor | None = None, *, split: int, passive: str, scale: str, clamp: float,
                     atan_k: float, eps: float, backend: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Inverse of :func:`coupling_forward`: ``(x, -logdet)``, with
    :math:`z_a = (y_a - t) e^{-f(s_{raw})}`, :math:`z_p = y_p`, :math:`x = (z - b) / a`.

    Args:
        y: (B, C, *S), the forward's output.
        s_raw, t, a, b, split, passive, scale, clamp, atan_k, eps, backend: as for
            :func:`coupling_forward`.

    Example:
        >>> x, s, t = torch.randn(2, 4), torch.randn(2, 2), torch.randn(2, 2)
        >>> y, _ = coupling_forward(x, s, t, split=2)
        >>> torch.allclose(coupling_inverse(y, s, t, split=2)[0], x, atol=1e-6)
        True
    """
    return _run(True, y, s_raw, _separate(t), a, b, (split, passive, scale, clamp, atan_k, eps), False, backend)


def coupling_forward_packed(x: torch.Tensor, h: torch.Tensor, a: torch.Tensor | None = None,
                            b: torch.Tensor | None = None, *, split: int, passive: str, scale: str, clamp: float,
                            atan_k: float, eps: float, check: bool = False, backend: str | None = None
                            ) -> tuple[torch.Tensor, ...]:
    """:func:`coupling_forward` with s_raw, t the halves of one subnet output h = [s_raw | t]
    (FrEIA's / CompVis' layout): the same values as ``coupling_forward(x, h[:, :C_a], h[:, C_a:],
    ...)``; on the compiled backends the backward writes one grad_h instead of two per-view grads
    that autograd would scatter into zeros and add.

    Args:
        x: (B, C, *S).
        h: (B, 2 C_active, *S) like x.
        a, b, split, passive, scale, clamp, atan_k, eps, check, backend: as for
            :func:`coupling_forward`.

    Example:
        >>> x, h = torch.randn(2, 4), torch.randn(2, 4)
        >>> y, logdet = coupling_forward_packed(x, h, split=2)
        >>> torch.equal(y, coupling_forward(x, h[:, :2], h[:, 2:], split=2)[0])
        True
    """
    return _run(False, x, h, PACKED, a, b, (split, passive, scale, clamp, atan_k, eps), bool(check), backend)


def coupling_inverse_packed(y: torch.Tensor, h: torch.Tensor, a: torch.Tensor | None = None,
                            b: torch.Tensor | None = None, *, split: int, passive: str, scale: str, clamp: float,
                            atan_k: float, eps: float, backend: str | None = None
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`coupling_inverse` with the packed subnet output h = [s_raw | t] (see
    :func:`coupling_forward_packed`).

    Args:
        y: (B, C, *S).
        h: (B, 2 C_active, *S) like y.
        a, b, split, passive, scale, clamp, atan_k, eps, backend: as for :func:`coupling_forward`.

    Example:
        >>> x, h = torch.randn(2, 4), torch.randn(2, 4)
        >>> y, _ = coupling_forward_packed(x, h, split=2)
        >>> torch.allclose(coupling_inverse_packed(y, h, split=2)[0], x, atol=1e-6)
        True
    """
    return _run(True, y, h, PACKED, a, b, (split, passive, scale, clamp, atan_k, eps), False, backend)


for _fn in (coupling_forward, coupling_inverse, coupling_forward_packed, coupling_inverse_packed):
    _fn.__kwdefaults__.update(CONFIG_DEFAULTS)  # the one source of the config defaults (module docstring)
del _fn
