r"""Triton kernels of the fused actnorm + affine coupling op: ``coupling_kernel`` (forward, or
inverse with ``INVERSE``) and ``coupling_bwd_kernel`` (backward of either).

Every kernel views x as (B, C, S) (S = prod of spatial dims, 1 for vectors) and one
program handles a tile of BLOCK_B samples x BLOCK_C channels x BLOCK_S positions, passive
and active channels alike (channel c is active iff act0 <= c < act0 + c_act). s_raw and t
are read through their (batch, channel, position) strides, so halves / interleaved views
of a subnet output are never copied. Loads and stores use the storage dtype, math runs in
fp32 (fp64 for fp64 storage); stores round to nearest even.

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

import os

import triton
import triton.language as tl

from .scale_math import scale_deriv, scale_value

__all__ = ["coupling_kernel", "coupling_bwd_kernel"]

# Triton's interpreter (3.x) casts fp32 -> bf16 by truncation (round toward zero); GPUs round
# to nearest even. Under the interpreter the kernels round explicitly before the cast.
_INTERPRET = tl.constexpr(os.environ.get("TRITON_INTERPRET", "0") == "1")


@triton.jit
def _to_storage(v, ptr):
    """v cast to the element type of ``ptr``, rounded to nearest even."""
    if _INTERPRET and ptr.dtype.element_ty == tl.bfloat16:
        v = v.to(tl.float32)
        bits = v.to(tl.uint32, bitcast=True)
        rne = ((bits + (0x7FFF + ((bits >> 16) & 1))) >> 16) << 16
        v = tl.where(v != v, v, rne.to(tl.float32, bitcast=True))  # NaN payloads kept
    return v.to(ptr.dtype.element_ty)


@triton.jit
def _tile(in_ptr, s_ptr, a_ptr, b_ptr, B, C, S, act0, c_act, ssb, ssc, sss,
          clamp, inv_clamp, atan_k, eps, n_cblk, n_sblk,
          HAS_AB: tl.constexpr, SCALE: tl.constexpr, EPS0: tl.constexpr,
          ATAN_TERMS: tl.constexpr, ACC: tl.constexpr,
          BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr):
    """This program's tile: program ids, (b, c, s) indices, masks (in bounds ``m``, active
    channel ``act``), the (B, C, S) offsets, the main input v, s_raw r, s = f(r) (0 off the
    active channels) and actnorm a, 1/a, b (identity without actnorm)."""
    pid = tl.program_id(0)
    pid_s = pid % n_sblk
    pid_c = (pid // n_sblk) % n_cblk
    pid_b = pid // (n_sblk * n_cblk)
    ob = (pid_b * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)[:, None, None]
    oc = (pid_c * BLOCK_C + tl.arange(0, BLOCK_C))[None, :, None]
    os = (pid_s * BLOCK_S + tl.arange(0, BLOCK_S)).to(tl.int64)[None, None, :]
    m = (ob < B) & (oc < C) & (os < S)
    act = m & (oc >= act0) & (oc < act0 + c_act)
    ca = (oc - act0).to(tl.int64)
    off = (ob * C + oc) * S + os
    v = tl.load(in_ptr + off, mask=m, other=0.0).to(ACC)
    r = _load_active(s_ptr, ob, ca, os, ssb, ssc, sss, act, ACC)
    if HAS_AB:
        a = tl.load(a_ptr + oc, mask=oc < C, other=1.0).to(ACC)
        b = tl.load(b_ptr + oc, mask=oc < C, other=0.0).to(ACC)
    else:
        a = tl.full(oc.shape, 1.0, ACC)
        b = tl.full(oc.shape, 0.0, ACC)
    s = tl.where(act, scale_value(r, clamp, inv_clamp, atan_k, eps, SCALE, EPS0, ATAN_TERMS), 0.0)
    return pid_b, pid_c, pid_s, ob, ca, os, m, act, off, v, r, s, a, 1.0 / a, b


@triton.jit
def _load_active(ptr, ob, ca, os, sb, sc, ss, act, ACC: tl.constexpr):
    """An active-channel operand (s_raw, t) read through its (batch, channel, position) strides."""
    return tl.load(ptr + ob * sb + ca * sc + os * ss, mask=act, other=0.0).to(ACC)


@triton.jit
def _store_per_sample(ptr, part, pid_b, pid_c, pid_s, B, n_cblk, n_sblk, BLOCK_B: tl.constexpr):
    """ptr[b, tile] = part[b], this tile's reduction of sample b (log-det sum or check max)."""
    rows = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    tl.store(ptr + rows.to(tl.int64) * (n_cblk * n_sblk) + pid_c * n_sblk + pid_s, part,
             mask=rows < B)


@triton.jit
def _store_ab_part(part_ptr, v, pid_b, pid_c, pid_s, C, n_sblk, BLOCK_C: tl.constexpr):
    """ab_part[tile, c] = sum over the tile's samples and positions of v[:, c]."""
    part = tl.sum(tl.sum(v, axis=2), axis=0)
    cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    tl.store(part_ptr + (pid_b * n_sblk + pid_s).to(tl.int64) * C + cols, part, mask=cols < C)


@triton.jit
def _unmap(y, t, s, act, inv_a, b):
    """x = ((y - t) e^{-s} - b) / a on the active channels, (y - b) / a on the passive ones."""
    return (tl.where(act, (y - t) * tl.exp(-s), y) - b) * inv_a


@triton.jit
def coupling_kernel(
    in_ptr, s_ptr, t_ptr, a_ptr, b_ptr, out_ptr, ld_ptr, err_ptr,
    B, C, S, act0, c_act, ssb, ssc, sss, tsb, tsc, tss,
    clamp, inv_clamp, atan_k, eps, n_cblk, n_sblk,
    INVERSE: tl.constexpr, CHECK: tl.constexpr, HAS_AB: tl.constexpr, SCALE: tl.constexpr,
    EPS0: tl.constexpr, ATAN_TERMS: tl.constexpr, IS_F64: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr,
):
    """y = coupling(x), or x = coupling^{-1}(y) when INVERSE, and per-tile partials of sum s.

    With CHECK (forward only) also the per-tile max |x' - x|, x' rebuilt from y as stored.
    """
    ACC: tl.constexpr = tl.float64 if IS_F64 else tl.float32
    pid_b, pid_c, pid_s, ob, ca, os, m, act, off, v, r, s, a, inv_a, b = _tile(
        in_ptr, s_ptr, a_ptr, b_ptr, B, C, S, act0, c_act, ssb, ssc, sss,
        clamp, inv_clamp, atan_k, eps, n_cblk, n_sblk,
        HAS_AB, SCALE, EPS0, ATAN_TERMS, ACC, BLOCK_B, BLOCK_C, BLOCK_S)
    t = _load_active(t_ptr, ob, ca, os, tsb, tsc, tss, act, ACC)
    if INVERSE:
        out = _unmap(v, t, s, act, inv_a, b)
    else:
        z = v * a + b
        out = tl.where(act, z * tl.exp(s) + t, z)
    out = _to_storage(out, out_ptr)
    tl.store(out_ptr + off, out, mask=m)
    _store_per_sample(ld_ptr, tl.sum(tl.sum(s, axis=2), axis=1), pid_b, pid_c, pid_s, B,
                      n_cblk, n_sblk, BLOCK_B)
    if CHECK:
        err = tl.where(m, tl.abs(_unmap(out.to(ACC), t, s, act, inv_a, b) - v), 0.0)
        _store_per_sample(err_ptr, tl.max(tl.max(err, axis=2), axis=1), pid_b, pid_c, pid_s, B,
                          n_cblk, n_sblk, BLOCK_B)


@triton.jit
def coupling_bwd_kernel(
    g_ptr, gl_ptr, in_ptr, s_ptr, t_ptr, a_ptr, b_ptr, gin_ptr, gs_ptr, gt_ptr, ga_ptr, gb_ptr,
    B, C, S, act0, c_act, ssb, ssc, sss, tsb, tsc, tss,
    clamp, inv_clamp, atan_k, eps, n_cblk, n_sblk,
    INVERSE: tl.constexpr, HAS_AB: tl.constexpr, SCALE: tl.constexpr, EPS0: tl.constexpr,
    ATAN_TERMS: tl.constexpr, IS_F64: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr,
):
    """Grads of the forward (in = x, g = grad_y) or, when INVERSE, of the inverse (in = y,
    g = grad_x; only this reads t): grad of in, gs_raw, gt (contiguous (B, c_act, S)) and
    per-tile grad_a / grad_b partials."""
    ACC: tl.constexpr = tl.float64 if IS_F64 else tl.float32
    pid_b, pid_c, pid_s, ob, ca, os, m, act, off, v, r, s, a, inv_a, b = _tile(
        in_ptr, s_ptr, a_ptr, b_ptr, B, C, S, act0, c_act, ssb, ssc, sss,
        clamp, inv_clamp, atan_k, eps, n_cblk, n_sblk,
        HAS_AB, SCALE, EPS0, ATAN_TERMS, ACC, BLOCK_B, BLOCK_C, BLOCK_S)
    g = tl.load(g_ptr + off, mask=m, other=0.0).to(ACC)
    gl = tl.load(gl_ptr + ob, mask=ob < B, other=0.0).to(ACC)
    ds = scale_deriv(r, inv_clamp, atan_k, eps, SCALE, EPS0)
    if INVERSE:
        t = _load_active(t_ptr, ob, ca, os, tsb, tsc, tss, act, ACC)
        ies = tl.exp(-s)
        z = tl.where(act, (v - t) * ies, v)
        gz = g * inv_a
        g_in = tl.where(act, gz * ies, gz)
        gs = -(gz * z + gl) * ds
        gt = -g_in
        ga = -(gz * ((z - b) * inv_a))
        gb = -gz
    else:
        z = v * a + b
        gz = tl.where(act, g * tl.exp(s), g)
        g_in = gz * a
        gs = (gz * z + gl) * ds
        gt = g
        ga = gz * v
        gb = gz
    tl.store(gin_ptr + off, _to_storage(g_in, gin_ptr), mask=m)
    g_off = (ob * c_act + ca) * S + os
    tl.store(gs_ptr + g_off, _to_storage(gs, gs_ptr), mask=act)
    tl.store(gt_ptr + g_off, _to_storage(gt, gt_ptr), mask=act)
    if HAS_AB:
        _store_ab_part(ga_ptr, ga, pid_b, pid_c, pid_s, C, n_sblk, BLOCK_C)
        _store_ab_part(gb_ptr, gb, pid_b, pid_c, pid_s, C, n_sblk, BLOCK_C)
