"""Scale functions of the coupling op, written in Triton from exp/log/sqrt only.

``tl.math`` has no tanh, atan or log1p, and libdevice is unavailable under
``TRITON_INTERPRET=1``, so they are built here from primitives the interpreter
and every GPU target provide. Math runs in the dtype of the inputs given (fp32,
or fp64 for fp64 storage); ``ATAN_TERMS`` sets the series length for that precision.

Scale functions (``SCALE`` = the position of the name in :data:`flowkern.spec.SCALES`):
exp: s = r;  tanh: s = c tanh(r / c);  atan: s = c k atan(r / c);
sigmoid: s = log(sigmoid(r + 2) + eps).
"""

from __future__ import annotations

import triton
import triton.language as tl

__all__ = ["scale_value", "scale_deriv"]

_HALF_PI = tl.constexpr(1.5707963267948966)


@triton.jit
def _tanh(u):
    """tanh(u) = sign(u) (1 - e) / (1 + e), e = exp(-2|u|) (no overflow for any u)."""
    e = tl.exp(-2.0 * tl.abs(u))
    th = (1.0 - e) / (1.0 + e)
    return tl.where(u < 0, -th, th)


@triton.jit
def _log1p(v):
    """log(1 + v) accurate for small v: log(w) v / (w - 1), w = 1 + v (v itself when w == 1)."""
    w = 1.0 + v
    d = tl.where(w == 1.0, 1.0, w - 1.0)
    return tl.where(w == 1.0, v, tl.log(w) * (v / d))


@triton.jit
def _atan(u, N_TERMS: tl.constexpr):
    """atan(u) by range reduction and an odd Taylor series.

    |u| > 1: atan(u) = sign(u) pi/2 - atan(1/u).  Two half-angle steps
    atan(v) = 2 atan(v / (1 + sqrt(1 + v^2))) bring |w| <= tan(pi/16) ~ 0.199,
    where sum_k (-1)^k w^(2k+1) / (2k+1) reaches fp32 with 7 terms, fp64 with 12 (``N_TERMS``).
    """
    au = tl.abs(u)
    big = au > 1.0
    v = tl.where(big, 1.0 / tl.maximum(au, 1.0), au)
    v = v / (1.0 + tl.sqrt(1.0 + v * v))
    w = v / (1.0 + tl.sqrt(1.0 + v * v))
    w2 = w * w
    # Horner: poly = sum_k c_k w2^k with c_k = (-1)^k / (2k + 1), k < N_TERMS
    poly = tl.zeros_like(w2) + (1.0 - 2.0 * ((N_TERMS - 1) % 2)) / (2 * N_TERMS - 1)
    for k in tl.static_range(N_TERMS - 2, -1, -1):
        poly = (1.0 - 2.0 * (k % 2)) / (2 * k + 1) + w2 * poly
    at = 4.0 * w * poly
    at = tl.where(big, _HALF_PI - at, at)
    return tl.where(u < 0, -at, at)


@triton.jit
def scale_value(r, clamp, inv_clamp, atan_k, eps, SCALE: tl.constexpr, EPS0: tl.constexpr,
                ATAN_TERMS: tl.constexpr):
    """s = f(r) for the scale function ``SCALE`` (module docstring)."""
    if SCALE == 0:
        s = r
    elif SCALE == 1:
        s = clamp * _tanh(r * inv_clamp)
    elif SCALE == 2:
        s = (clamp * atan_k) * _atan(r * inv_clamp, ATAN_TERMS)
    else:
        u = r + 2.0
        if EPS0:
            # log(sigmoid(u)) = -(max(-u, 0) + log1p(exp(-|u|))), finite for all u
            s = -(tl.maximum(-u, 0.0) + _log1p(tl.exp(-tl.abs(u))))
        else:
            s = tl.log(1.0 / (1.0 + tl.exp(-u)) + eps)
    return s


@triton.jit
def scale_deriv(r, inv_clamp, atan_k, eps, SCALE: tl.constexpr, EPS0: tl.constexpr):
    """ds/dr: exp 1; tanh sech^2(r / c); atan k / (1 + (r/c)^2); sigmoid
    sigma(u) sigma(-u) / (sigma(u) + eps), u = r + 2 (sigma(-u) when eps == 0).

    Both are formed without cancellation: 1 - (s/c)^2 near tanh's saturation and 1 - sigma(u)
    for large u would turn the rounding error of s or sigma(u) into a large relative error.
    """
    if SCALE == 0:
        d = tl.full(r.shape, 1.0, r.dtype)
    elif SCALE == 1:
        # sech^2(q) = 4 e / (1 + e)^2, e = exp(-2|q|)
        e = tl.exp(-2.0 * tl.abs(r * inv_clamp))
        d = 4.0 * e / ((1.0 + e) * (1.0 + e))
    elif SCALE == 2:
        q = r * inv_clamp
        d = atan_k / (1.0 + q * q)
    else:
        u = r + 2.0
        sig_neg = 1.0 / (1.0 + tl.exp(u))
        if EPS0:
            d = sig_neg
        else:
            sig = 1.0 / (1.0 + tl.exp(-u))
            d = sig * sig_neg / (sig + eps)
    return d
