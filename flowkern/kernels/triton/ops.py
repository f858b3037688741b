"""The Triton coupling kernels as PyTorch ops: ``flowkern::coupling_{fwd,inv,fwd_bwd,inv_bwd}_triton``.

Why ``torch.library.triton_op`` + ``wrap_triton`` (not ``custom_op``): a custom_op is
opaque to torch.compile, while a triton_op is decomposed under FunctionalTensorMode, so
Inductor sees the Triton kernel calls themselves and can schedule them inside its own
generated code (no graph break, CUDA-graph friendly); in eager mode it runs as a normal
op. Same schemas and return conventions as the C++ ops of :mod:`flowkern.ops.coupling`,
with autograd registered the same way (the backward ops are triton_ops too).

Importing this module imports triton, so it is only imported lazily by
:mod:`flowkern.kernels.triton.backend`.
"""

from __future__ import annotations

import math
import os

import torch
import triton
from torch.library import triton_op, wrap_triton

from ...ops.autograd import make_backward, setup_context
from ...ops.spec import acc_dtype
from . import kernels as K
from .tiles import AUTOTUNE_STAGES, AUTOTUNE_WARPS, Tiles, pick_tiles

__all__ = ["coupling_fwd_triton", "coupling_inv_triton", "coupling_fwd_bwd_triton",
           "coupling_inv_bwd_triton"]

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
_AUTOTUNE = not _INTERPRET and torch.cuda.is_available()
_KEY = ["B", "C", "S", "BLOCK_B", "BLOCK_C", "BLOCK_S"]


def _launcher(kernel):
    """The kernel, wrapped in triton.autotune (num_warps x num_stages) when a GPU is present."""
    if not _AUTOTUNE:
        return kernel
    configs = [triton.Config({}, num_warps=w, num_stages=s)
               for w in AUTOTUNE_WARPS for s in AUTOTUNE_STAGES]
    return triton.autotune(configs=configs, key=_KEY)(kernel)


_FWD = _launcher(K.coupling_fwd_kernel)
_INV = _launcher(K.coupling_inv_kernel)
_FWD_BWD = _launcher(K.coupling_fwd_bwd_kernel)
_INV_BWD = _launcher(K.coupling_inv_bwd_kernel)


def _launch_opts(tiles: Tiles) -> dict:
    opts = dict(BLOCK_B=tiles.BLOCK_B, BLOCK_C=tiles.BLOCK_C, BLOCK_S=tiles.BLOCK_S)
    if not _AUTOTUNE:
        opts["num_warps"] = tiles.num_warps
    return opts


def _bcs_strides(v: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """v (B, C', *S) and its (batch, channel, position) strides, S flattened without a copy.

    Views whose spatial dims cannot be flattened to one stride (rare: e.g. a spatial
    transpose) are made contiguous first.
    """
    if v.dim() == 2:
        return v, (v.stride(0), v.stride(1), 0)
    dims = [(n, st) for n, st in zip(v.shape[2:], v.stride()[2:]) if n != 1]
    flat = all(dims[i][1] == dims[i + 1][1] * dims[i + 1][0] for i in range(len(dims) - 1))
    if not flat:
        v = v.contiguous()
        dims = [(n, st) for n, st in zip(v.shape[2:], v.stride()[2:]) if n != 1]
    return v, (v.stride(0), v.stride(1), dims[-1][1] if dims else 0)


def _shape(x: torch.Tensor, split: int, passive_first: bool) -> tuple[int, int, int, int, int]:
    B, C = x.shape[0], x.shape[1]
    S = math.prod(x.shape[2:])
    c_act = C - split if passive_first else split
    act0 = split if passive_first else 0
    return B, C, S, c_act, act0


def _scale_args(scale: int, clamp: float, atan_k: float, eps: float, dtype: torch.dtype):
    inv_clamp = 1.0 / clamp if clamp != 0 else 0.0
    consts = dict(SCALE=scale, EPS0=eps == 0.0, ATAN_TERMS=12 if dtype == torch.float64 else 7,
                  IS_F64=dtype == torch.float64)
    return (clamp, inv_clamp, atan_k, eps), consts


def _actnorm_logdet(a: torch.Tensor | None, S: int, acc: torch.dtype) -> torch.Tensor | float:
    """prod(S) * sum_c log|a_c| (0 without actnorm)."""
    return 0.0 if a is None else S * torch.log(torch.abs(a.to(acc))).sum()


@triton_op("flowkern::coupling_fwd_triton", mutates_args=())
def coupling_fwd_triton(
    x: torch.Tensor, s_raw: torch.Tensor, t: torch.Tensor, a: torch.Tensor | None,
    b: torch.Tensor | None, split: int, passive_first: bool, scale: int, clamp: float,
    atan_k: float, eps: float, check: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, logdet, err): y_a = (x_a a + b) e^s + t, y_p = x_p a + b; err (B,) with check else (0,)."""
    x = x.contiguous()
    B, C, S, c_act, act0 = _shape(x, split, passive_first)
    s_raw, ss = _bcs_strides(s_raw)
    t, ts = _bcs_strides(t)
    acc = acc_dtype(x.dtype)
    tiles = pick_tiles(B, C, S)
    y = torch.empty_like(x)
    ld_part = torch.empty((B, tiles.n_cblk * tiles.n_sblk), dtype=acc, device=x.device)
    err_part = torch.empty_like(ld_part) if check else ld_part
    sargs, consts = _scale_args(scale, clamp, atan_k, eps, x.dtype)
    wrap_triton(_FWD)[(tiles.n_programs,)](
        x, s_raw, t, a, b, y, ld_part, err_part, B, C, S, act0, c_act, *ss, *ts, *sargs,
        tiles.n_cblk, tiles.n_sblk, HAS_AB=a is not None, CHECK=check, **consts,
        **_launch_opts(tiles))
    logdet = ld_part.sum(1) + _actnorm_logdet(a, S, acc)
    err = err_part.amax(1) if check else ld_part.new_empty((0,))
    return y, logdet, err


@triton_op("flowkern::coupling_inv_triton", mutates_args=())
def coupling_inv_triton(
    y: torch.Tensor, s_raw: torch.Tensor, t: torch.Tensor, a: torch.Tensor | None,
    b: torch.Tensor | None, split: int, passive_first: bool, scale: int, clamp: float,
    atan_k: float, eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, -logdet): x_a = ((y_a - t) e^{-s} - b) / a, x_p = (y_p - b) / a."""
    y = y.contiguous()
    B, C, S, c_act, act0 = _shape(y, split, passive_first)
    s_raw, ss = _bcs_strides(s_raw)
    t, ts = _bcs_strides(t)
    acc = acc_dtype(y.dtype)
    tiles = pick_tiles(B, C, S)
    x = torch.empty_like(y)
    ld_part = torch.empty((B, tiles.n_cblk * tiles.n_sblk), dtype=acc, device=y.device)
    sargs, consts = _scale_args(scale, clamp, atan_k, eps, y.dtype)
    wrap_triton(_INV)[(tiles.n_programs,)](
        y, s_raw, t, a, b, x, ld_part, B, C, S, act0, c_act, *ss, *ts, *sargs,
        tiles.n_cblk, tiles.n_sblk, HAS_AB=a is not None, **consts, **_launch_opts(tiles))
    return x, -(ld_part.sum(1) + _actnorm_logdet(a, S, acc))


def _ab_grads(ga_part, gb_part, gl, a, S, sign, dtype):
    """grad_a = sum of partials + sign * S * sum_b gl_b / a; grad_b = sum of partials."""
    if a is None:
        return gl.new_empty((0,), dtype=dtype), gl.new_empty((0,), dtype=dtype)
    acc = ga_part.dtype
    ga = ga_part.sum(0) + sign * gl.to(acc).sum() * S / a.to(acc)
    return ga.to(a.dtype), gb_part.sum(0).to(a.dtype)


@triton_op("flowkern::coupling_fwd_bwd_triton", mutates_args=())
def coupling_fwd_bwd_triton(
    grad_y: torch.Tensor, grad_logdet: torch.Tensor, x: torch.Tensor, s_raw: torch.Tensor,
    t: torch.Tensor, a: torch.Tensor | None, b: torch.Tensor | None, split: int,
    passive_first: bool, scale: int, clamp: float, atan_k: float, eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grad_x, grad_s_raw, grad_t, grad_a, grad_b) of the forward; grad_a/b are (0,) without a/b."""
    x, grad_y, grad_logdet = x.contiguous(), grad_y.contiguous(), grad_logdet.contiguous()
    B, C, S, c_act, act0 = _shape(x, split, passive_first)
    s_raw, ss = _bcs_strides(s_raw)
    acc = acc_dtype(x.dtype)
    tiles = pick_tiles(B, C, S)
    gx = torch.empty_like(x)
    gs = torch.empty(s_raw.shape, dtype=x.dtype, device=x.device)
    gt = torch.empty_like(gs)
    n_rows = tiles.n_bblk * tiles.n_sblk
    ga_part = gb_part = None
    if a is not None:
        ga_part = torch.empty((n_rows, C), dtype=acc, device=x.device)
        gb_part = torch.empty_like(ga_part)
    sargs, consts = _scale_args(scale, clamp, atan_k, eps, x.dtype)
    wrap_triton(_FWD_BWD)[(tiles.n_programs,)](
        grad_y, grad_logdet, x, s_raw, a, b, gx, gs, gt, ga_part, gb_part,
        B, C, S, act0, c_act, *ss, *sargs, tiles.n_cblk, tiles.n_sblk,
        HAS_AB=a is not None, **consts, **_launch_opts(tiles))
    ga, gb = _ab_grads(ga_part, gb_part, grad_logdet, a, S, 1.0, x.dtype)
    return gx, gs, gt, ga, gb


@triton_op("flowkern::coupling_inv_bwd_triton", mutates_args=())
def coupling_inv_bwd_triton(
    grad_x: torch.Tensor, grad_logdet: torch.Tensor, y: torch.Tensor, s_raw: torch.Tensor,
    t: torch.Tensor, a: torch.Tensor | None, b: torch.Tensor | None, split: int,
    passive_first: bool, scale: int, clamp: float, atan_k: float, eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grad_y, grad_s_raw, grad_t, grad_a, grad_b) of the inverse; grad_a/b are (0,) without a/b."""
    y, grad_x, grad_logdet = y.contiguous(), grad_x.contiguous(), grad_logdet.contiguous()
    B, C, S, c_act, act0 = _shape(y, split, passive_first)
    s_raw, ss = _bcs_strides(s_raw)
    t, ts = _bcs_strides(t)
    acc = acc_dtype(y.dtype)
    tiles = pick_tiles(B, C, S)
    gy = torch.empty_like(y)
    gs = torch.empty(s_raw.shape, dtype=y.dtype, device=y.device)
    gt = torch.empty_like(gs)
    n_rows = tiles.n_bblk * tiles.n_sblk
    ga_part = gb_part = None
    if a is not None:
        ga_part = torch.empty((n_rows, C), dtype=acc, device=y.device)
        gb_part = torch.empty_like(ga_part)
    sargs, consts = _scale_args(scale, clamp, atan_k, eps, y.dtype)
    wrap_triton(_INV_BWD)[(tiles.n_programs,)](
        grad_x, grad_logdet, y, s_raw, t, a, b, gy, gs, gt, ga_part, gb_part,
        B, C, S, act0, c_act, *ss, *ts, *sargs, tiles.n_cblk, tiles.n_sblk,
        HAS_AB=a is not None, **consts, **_launch_opts(tiles))
    ga, gb = _ab_grads(ga_part, gb_part, grad_logdet, a, S, -1.0, y.dtype)
    return gy, gs, gt, ga, gb


# autograd: the convention shared with the C++ ops (flowkern/ops/autograd.py)
coupling_fwd_triton.register_autograd(make_backward(coupling_fwd_bwd_triton),
                                      setup_context=setup_context)
coupling_inv_triton.register_autograd(make_backward(coupling_inv_bwd_triton),
                                      setup_context=setup_context)
