"""Shared test helpers: input factories, per-dtype tolerances, the flash-attention error rule."""

from __future__ import annotations

import torch

# (atol, rtol) per dtype for comparisons against a same-precision reference.
TOL = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (2e-5, 2e-5),
    torch.bfloat16: (3e-2, 3e-2),
    torch.float16: (4e-3, 4e-3),
}

SCALES = ("exp", "tanh", "atan", "sigmoid")


def make_case(
    B: int = 5,
    C: int = 7,
    spatial: tuple[int, ...] = (),
    split: int | None = None,
    passive: str = "first",
    dtype: torch.dtype = torch.float32,
    layout: str = "halves",
    actnorm: bool = True,
    seed: int = 0,
    requires_grad: bool = False,
    device: str = "cpu",
):
    """Random op inputs. ``layout``: 'halves' (views of one subnet output, [s | t]),
    'interleaved' (normflows' 0::2 / 1::2) or 'contiguous' (separate tensors).

    Returns (x, s_raw, t, a, b, kwargs) with kwargs = dict(split=..., passive=...).
    """
    g = torch.Generator().manual_seed(seed)
    split = C // 2 if split is None else split
    c_act = C - split if passive == "first" else split
    x = torch.randn(B, C, *spatial, generator=g, dtype=torch.float64)
    if layout == "halves":
        h = torch.randn(B, 2 * c_act, *spatial, generator=g, dtype=torch.float64)
        s_raw, t = h[:, :c_act], h[:, c_act:]
    elif layout == "interleaved":
        h = torch.randn(B, 2 * c_act, *spatial, generator=g, dtype=torch.float64)
        s_raw, t = h[:, 0::2], h[:, 1::2]
    else:
        s_raw = torch.randn(B, c_act, *spatial, generator=g, dtype=torch.float64)
        t = torch.randn(B, c_act, *spatial, generator=g, dtype=torch.float64)
    a = b = None
    if actnorm:
        sign = torch.where(torch.rand(C, generator=g) < 0.2, -1.0, 1.0).double()
        a = sign * (0.5 + torch.rand(C, generator=g, dtype=torch.float64))
        b = 0.3 * torch.randn(C, generator=g, dtype=torch.float64)

    def prep(v):
        if v is None:
            return None
        v = v.to(device=device, dtype=dtype)
        return v.requires_grad_(requires_grad) if v.is_leaf else v

    if layout in ("halves", "interleaved"):
        h = h.to(device=device, dtype=dtype).requires_grad_(requires_grad)
        s_raw, t = (h[:, :c_act], h[:, c_act:]) if layout == "halves" else (h[:, 0::2], h[:, 1::2])
    else:
        s_raw, t = prep(s_raw), prep(t)
    return prep(x), s_raw, t, prep(a), prep(b), dict(split=split, passive=passive)


def upcast(*ts, dtype=torch.float64):
    return tuple(None if v is None else v.detach().to(dtype) for v in ts)


def flash_rule_ok(out: torch.Tensor, same_dtype_ref: torch.Tensor, exact: torch.Tensor,
                  slack: float = 2.0, floor: float = 0.0) -> bool:
    """flash-attention's rule: max error of ``out`` vs ``exact`` is at most ``slack`` × the
    error of PyTorch's own same-dtype computation (plus a tiny ``floor``)."""
    err = (out.double() - exact.double()).abs().max().item()
    ref_err = (same_dtype_ref.double() - exact.double()).abs().max().item()
    return err <= slack * ref_err + floor
