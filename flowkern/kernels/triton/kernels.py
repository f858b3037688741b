r"""Triton kernels of the fused actnorm + affine coupling op (forward, inverse, both backwards).

Every kernel views x as (B, C, S) (S = prod of spatial dims, 1 for vectors) and one
program handles a tile of BLOCK_B samples x BLOCK_C channels x BLOCK_S positions, passive
and active channels alike (channel c is active iff act0 <= c < act0 + c_act). s_raw and t
are read through their (batch, channel, position) strides, so halves / interleaved views
of a subnet output are never copied. Loads and stores use the storage dtype, math runs in
fp32 (fp64 for fp64 storage).

Reductions are deterministic and atomic-free: each program writes its partial log-det
(one per sample of the tile) to ``ld_part[b, tile]`` and its partial grad_a / grad_b
(one per channel) to ``ab_part[tile, c]``; the host sums those buffers.

Equations (z = x a + b, s = f(s_raw)):
  forward   y_a = z_a e^s + t,  y_p = z_p,  logdet = sum_S s (+ actnorm term on the host)
  inverse   x = ((y_a - t) e^{-s} - b) / a,  x_p = (y_p - b) / a
  fwd_bwd   gz = gy e^s (gy on passive), gx = gz a, ga += gz x, gb += gz, gt = gy,
            gs_raw = (gz z + gl) f'(s_raw)
  inv_bwd   gz = gx / a, gy = gz e^{-s} (gz on passive), gt = -gy, ga -= gz x, gb -= gz,
            gs_raw = -(gz z + gl) f'(s_raw) with z = (y - t) e^{-s}
"""

from __future__ import annotations

import triton
import triton.language as tl

from .scale_math import scale_deriv, scale_value

__all__ = ["coupling_fwd_kernel", "coupling_inv_kernel", "coupling_fwd_bwd_kernel",
           "coupling_inv_bwd_kernel"]


@triton.jit
def _tile(B, C, S, n_cblk, n_sblk, BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr,
          BLOCK_S: tl.constexpr):
    """Program ids and broadcastable (b, c, s) indices of this program's tile."""
    pid = tl.program_id(0)
    pid_s = pid % n_sblk
    pid_c = (pid // n_sblk) % n_cblk
    pid_b = pid // (n_sblk * n_cblk)
    ob = (pid_b * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)[:, None, None]
    oc = (pid_c * BLOCK_C + tl.arange(0, BLOCK_C))[None, :, None]
    os = (pid_s * BLOCK_S + tl.arange(0, BLOCK_S)).to(tl.int64)[None, None, :]
    return pid_b, pid_c, pid_s, ob, oc, os


@triton.jit
def _load_ab(a_ptr, b_ptr, oc, C, HAS_AB: tl.constexpr, ACC: tl.constexpr):
    """Per-channel actnorm (a, 1/a, b); identity without actnorm."""
    if HAS_AB:
        a = tl.load(a_ptr + oc, mask=oc < C, other=1.0).to(ACC)
        b = tl.load(b_ptr + oc, mask=oc < C, other=0.0).to(ACC)
    else:
        a = tl.full(oc.shape, 1.0, ACC)
        b = tl.full(oc.shape, 0.0, ACC)
    return a, 1.0 / a, b


@triton.jit
def _store_ld_part(ld_ptr, v, pid_b, pid_c, pid_s, B, n_cblk, n_sblk, BLOCK_B: tl.constexpr):
    """ld_part[b, tile] = sum over the tile's channels and positions of v[b]."""
    part = tl.sum(tl.sum(v, axis=2), axis=1)
    rows = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    tl.store(ld_ptr + rows.to(tl.int64) * (n_cblk * n_sblk) + pid_c * n_sblk + pid_s, part,
             mask=rows < B)


@triton.jit
def _store_ab_part(part_ptr, v, pid_b, pid_c, pid_s, C, n_sblk, BLOCK_C: tl.constexpr):
    """ab_part[tile, c] = sum over the tile's samples and positions of v[:, c]."""
    part = tl.sum(tl.sum(v, axis=2), axis=0)
    cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    tl.store(part_ptr + (pid_b * n_sblk + pid_s).to(tl.int64) * C + cols, part, mask=cols < C)


@triton.jit
def coupling_fwd_kernel(
    x_ptr, s_ptr, t_ptr, a_ptr, b_ptr, y_ptr, ld_ptr, err_ptr,
    B, C, S, act0, c_act, ssb, ssc, sss, tsb, tsc, tss,
    clamp, inv_clamp, atan_k, eps, n_cblk, n_sblk,
    HAS_AB: tl.constexpr, SCALE: tl.constexpr, EPS0: tl.constexpr, ATAN_TERMS: tl.constexpr,
    CHECK: tl.constexpr, IS_F64: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr,
):
    """y = coupling(x), per-tile log-det partials, and with CHECK the per-tile max |x' - x|."""
    ACC: tl.constexpr = tl.float64 if IS_F64 else tl.float32
    pid_b, pid_c, pid_s, ob, oc, os = _tile(B, C, S, n_cblk, n_sblk, BLOCK_B, BLOCK_C, BLOCK_S)
    m = (ob < B) & (oc < C) & (os < S)
    act = m & (oc >= act0) & (oc < act0 + c_act)
    ca = (oc - act0).to(tl.int64)
    x_off = (ob * C + oc) * S + os
    x = tl.load(x_ptr + x_off, mask=m, other=0.0).to(ACC)
    r = tl.load(s_ptr + ob * ssb + ca * ssc + os * sss, mask=act, other=0.0).to(ACC)
    t = tl.load(t_ptr + ob * tsb + ca * tsc + os * tss, mask=act, other=0.0).to(ACC)
    a, inv_a, b = _load_ab(a_ptr, b_ptr, oc, C, HAS_AB, ACC)
    s = tl.where(act, scale_value(r, clamp, inv_clamp, atan_k, eps, SCALE, EPS0, ATAN_TERMS), 0.0)
    z = x * a + b
    y = tl.where(act, z * tl.exp(s) + t, z)
    y_st = y.to(y_ptr.dtype.element_ty)
    tl.store(y_ptr + x_off, y_st, mask=m)
    _store_ld_part(ld_ptr, s, pid_b, pid_c, pid_s, B, n_cblk, n_sblk, BLOCK_B)
    if CHECK:
        yq = y_st.to(ACC)
        zr = tl.where(act, (yq - t) * tl.exp(-s), yq)
        err = tl.where(m, tl.abs((zr - b) * inv_a - x), 0.0)
        part = tl.max(tl.max(err, axis=2), axis=1)
        rows = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
        tl.store(err_ptr + rows.to(tl.int64) * (n_cblk * n_sblk) + pid_c * n_sblk + pid_s, part,
                 mask=rows < B)


@triton.jit
def coupling_inv_kernel(
    y_ptr, s_ptr, t_ptr, a_ptr, b_ptr, x_ptr, ld_ptr,
    B, C, S, act0, c_act, ssb, ssc, sss, tsb, tsc, tss,
    clamp, inv_clamp, atan_k, eps, n_cblk, n_sblk,
    HAS_AB: tl.constexpr, SCALE: tl.constexpr, EPS0: tl.constexpr, ATAN_TERMS: tl.constexpr,
    IS_F64: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr,
):
    """x = coupling^{-1}(y) and per-tile partials of sum s (negated on the host)."""
    ACC: tl.constexpr = tl.float64 if IS_F64 else tl.float32
    pid_b, pid_c, pid_s, ob, oc, os = _tile(B, C, S, n_cblk, n_sblk, BLOCK_B, BLOCK_C, BLOCK_S)
    m = (ob < B) & (oc < C) & (os < S)
    act = m & (oc >= act0) & (oc < act0 + c_act)
    ca = (oc - act0).to(tl.int64)
    y_off = (ob * C + oc) * S + os
    y = tl.load(y_ptr + y_off, mask=m, other=0.0).to(ACC)
    r = tl.load(s_ptr + ob * ssb + ca * ssc + os * sss, mask=act, other=0.0).to(ACC)
    t = tl.load(t_ptr + ob * tsb + ca * tsc + os * tss, mask=act, other=0.0).to(ACC)
    a, inv_a, b = _load_ab(a_ptr, b_ptr, oc, C, HAS_AB, ACC)
    s = tl.where(act, scale_value(r, clamp, inv_clamp, atan_k, eps, SCALE, EPS0, ATAN_TERMS), 0.0)
    z = tl.where(act, (y - t) * tl.exp(-s), y)
    tl.store(x_ptr + y_off, ((z - b) * inv_a).to(x_ptr.dtype.element_ty), mask=m)
    _store_ld_part(ld_ptr, s, pid_b, pid_c, pid_s, B, n_cblk, n_sblk, BLOCK_B)


@triton.jit
def coupling_fwd_bwd_kernel(
    gy_ptr, gl_ptr, x_ptr, s_ptr, a_ptr, b_ptr, gx_ptr, gs_ptr, gt_ptr, ga_ptr, gb_ptr,
    B, C, S, act0, c_act, ssb, ssc, sss,
    clamp, inv_clamp, atan_k, eps, n_cblk, n_sblk,
    HAS_AB: tl.constexpr, SCALE: tl.constexpr, EPS0: tl.constexpr, ATAN_TERMS: tl.constexpr,
    IS_F64: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr,
):
    """Grads of the forward: gx, gs_raw, gt (contiguous) and per-tile grad_a/grad_b partials."""
    ACC: tl.constexpr = tl.float64 if IS_F64 else tl.float32
    pid_b, pid_c, pid_s, ob, oc, os = _tile(B, C, S, n_cblk, n_sblk, BLOCK_B, BLOCK_C, BLOCK_S)
    m = (ob < B) & (oc < C) & (os < S)
    act = m & (oc >= act0) & (oc < act0 + c_act)
    ca = (oc - act0).to(tl.int64)
    x_off = (ob * C + oc) * S + os
    g_off = (ob * c_act + ca) * S + os
    x = tl.load(x_ptr + x_off, mask=m, other=0.0).to(ACC)
    gy = tl.load(gy_ptr + x_off, mask=m, other=0.0).to(ACC)
    gl = tl.load(gl_ptr + ob, mask=ob < B, other=0.0).to(ACC)
    r = tl.load(s_ptr + ob * ssb + ca * ssc + os * sss, mask=act, other=0.0).to(ACC)
    a, inv_a, b = _load_ab(a_ptr, b_ptr, oc, C, HAS_AB, ACC)
    s = scale_value(r, clamp, inv_clamp, atan_k, eps, SCALE, EPS0, ATAN_TERMS)
    es = tl.exp(s)
    z = x * a + b
    gz = tl.where(act, gy * es, gy)
    tl.store(gx_ptr + x_off, (gz * a).to(gx_ptr.dtype.element_ty), mask=m)
    gs = (gz * z + gl) * scale_deriv(r, s, inv_clamp, atan_k, eps, SCALE, EPS0)
    tl.store(gs_ptr + g_off, gs.to(gs_ptr.dtype.element_ty), mask=act)
    tl.store(gt_ptr + g_off, gy.to(gt_ptr.dtype.element_ty), mask=act)
    if HAS_AB:
        _store_ab_part(ga_ptr, gz * x, pid_b, pid_c, pid_s, C, n_sblk, BLOCK_C)
        _store_ab_part(gb_ptr, gz, pid_b, pid_c, pid_s, C, n_sblk, BLOCK_C)


@triton.jit
def coupling_inv_bwd_kernel(
    gx_ptr, gl_ptr, y_ptr, s_ptr, t_ptr, a_ptr, b_ptr, gy_ptr, gs_ptr, gt_ptr, ga_ptr, gb_ptr,
    B, C, S, act0, c_act, ssb, ssc, sss, tsb, tsc, tss,
    clamp, inv_clamp, atan_k, eps, n_cblk, n_sblk,
    HAS_AB: tl.constexpr, SCALE: tl.constexpr, EPS0: tl.constexpr, ATAN_TERMS: tl.constexpr,
    IS_F64: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr,
):
    """Grads of the inverse: gy, gs_raw, gt (contiguous) and per-tile grad_a/grad_b partials."""
    ACC: tl.constexpr = tl.float64 if IS_F64 else tl.float32
    pid_b, pid_c, pid_s, ob, oc, os = _tile(B, C, S, n_cblk, n_sblk, BLOCK_B, BLOCK_C, BLOCK_S)
    m = (ob < B) & (oc < C) & (os < S)
    act = m & (oc >= act0) & (oc < act0 + c_act)
    ca = (oc - act0).to(tl.int64)
    y_off = (ob * C + oc) * S + os
    g_off = (ob * c_act + ca) * S + os
    y = tl.load(y_ptr + y_off, mask=m, other=0.0).to(ACC)
    gx = tl.load(gx_ptr + y_off, mask=m, other=0.0).to(ACC)
    gl = tl.load(gl_ptr + ob, mask=ob < B, other=0.0).to(ACC)
    r = tl.load(s_ptr + ob * ssb + ca * ssc + os * sss, mask=act, other=0.0).to(ACC)
    t = tl.load(t_ptr + ob * tsb + ca * tsc + os * tss, mask=act, other=0.0).to(ACC)
    a, inv_a, b = _load_ab(a_ptr, b_ptr, oc, C, HAS_AB, ACC)
    s = scale_value(r, clamp, inv_clamp, atan_k, eps, SCALE, EPS0, ATAN_TERMS)
    ies = tl.exp(-s)
    z = tl.where(act, (y - t) * ies, y)
    gz = gx * inv_a
    gy = tl.where(act, gz * ies, gz)
    tl.store(gy_ptr + y_off, gy.to(gy_ptr.dtype.element_ty), mask=m)
    gs = -(gz * z + gl) * scale_deriv(r, s, inv_clamp, atan_k, eps, SCALE, EPS0)
    tl.store(gs_ptr + g_off, gs.to(gs_ptr.dtype.element_ty), mask=act)
    tl.store(gt_ptr + g_off, (-gy).to(gt_ptr.dtype.element_ty), mask=act)
    if HAS_AB:
        xr = (z - b) * inv_a
        _store_ab_part(ga_ptr, -(gz * xr), pid_b, pid_c, pid_s, C, n_sblk, BLOCK_C)
        _store_ab_part(gb_ptr, -gz, pid_b, pid_c, pid_s, C, n_sblk, BLOCK_C)
