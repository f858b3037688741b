"""The Triton coupling kernels as PyTorch ops: ``flowkern::coupling_triton`` and its backward.

Why ``torch.library.triton_op`` + ``wrap_triton`` (not ``custom_op``): a custom_op is
opaque to torch.compile, while a triton_op is decomposed under FunctionalTensorMode, so
Inductor sees the Triton kernel calls themselves and can schedule them inside its own
generated code (no graph break, CUDA-graph friendly); in eager mode it runs as a normal
op. Same schemas and return conventions as the compiled ops (:mod:`flowkern.backends.compiled`),
with autograd registered the same way (the backward op is a triton_op too).

Importing this module imports triton, so it is only imported lazily by
:mod:`flowkern.backends.triton`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import triton
from torch.library import triton_op, wrap_triton

from ...spec import SCALES, acc_dtype
from .. import autograd
from . import kernels as K
from .tiles import AUTOTUNE_STAGES, AUTOTUNE_WARPS, Tiles, pick_tiles

__all__ = ["coupling_triton", "coupling_backward_triton"]

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


# one launcher (autotuner) per direction: the best config may differ between them
_FWD = _launcher(K.coupling_kernel)
_INV = _launcher(K.coupling_kernel)
_FWD_BWD = _launcher(K.coupling_bwd_kernel)
_INV_BWD = _launcher(K.coupling_bwd_kernel)


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


@dataclass(frozen=True)
class _Call:
    """What every launch needs: sizes, tiles, the strided s_raw / t and the scale arguments."""

    B: int
    C: int
    S: int
    tiles: Tiles
    acc: torch.dtype
    s_raw: torch.Tensor
    t: torch.Tensor
    geometry: tuple  # (B, C, S, act0, c_act, s_raw strides, t strides)
    scale_args: tuple  # (clamp, 1/clamp, atan_k, eps)
    consts: dict  # constexprs: SCALE, EPS0, ATAN_TERMS, IS_F64, HAS_AB


def _call(v: torch.Tensor, s_raw: torch.Tensor, t: torch.Tensor, a: torch.Tensor | None,
          split: int, passive: str, scale: str, clamp: float, atan_k: float, eps: float,
          with_t: bool = True) -> _Call:
    """Launch arguments for the main input ``v`` (x or y, already contiguous); without
    ``with_t`` (the forward's backward, which does not read t) t's strides are passed as 0."""
    B, C = v.shape[0], v.shape[1]
    S = math.prod(v.shape[2:])
    c_act = C - split if passive == "first" else split
    act0 = split if passive == "first" else 0
    s_raw, ss = _bcs_strides(s_raw)
    t, ts = _bcs_strides(t) if with_t else (t, (0, 0, 0))
    inv_clamp = 1.0 / clamp if clamp != 0 else 0.0
    consts = dict(SCALE=SCALES.index(scale), EPS0=eps == 0.0, ATAN_TERMS=12 if v.dtype == torch.float64 else 7,
                  IS_F64=v.dtype == torch.float64, HAS_AB=a is not None)
    return _Call(B, C, S, pick_tiles(B, C, S), acc_dtype(v.dtype), s_raw, t,
                 (B, C, S, act0, c_act, *ss, *ts),
                 (clamp, inv_clamp, atan_k, eps), consts)


def _launch(kernel, c: _Call, *tensors: torch.Tensor | None, **consts) -> None:
    """kernel[grid](*tensors, *geometry, *scale args, n_cblk, n_sblk, constexprs)."""
    tiles = c.tiles
    opts = dict(BLOCK_B=tiles.BLOCK_B, BLOCK_C=tiles.BLOCK_C, BLOCK_S=tiles.BLOCK_S)
    if not _AUTOTUNE:
        opts["num_warps"] = tiles.num_warps
    wrap_triton(kernel)[(tiles.n_programs,)](
        *tensors, *c.geometry, *c.scale_args, tiles.n_cblk, tiles.n_sblk,
        **c.consts, **consts, **opts)


def _logdet(ld_part: torch.Tensor, a: torch.Tensor | None, c: _Call) -> torch.Tensor:
    """Sum of the per-tile partials + prod(S) * sum_c log|a_c| (actnorm, if any)."""
    logdet = ld_part.sum(1)
    return logdet if a is None else logdet + c.S * torch.log(torch.abs(a.to(c.acc))).sum()


@triton_op("flowkern::coupling_triton", mutates_args=())
def coupling_triton(
    input: torch.Tensor, s_raw: torch.Tensor, t: torch.Tensor, a: torch.Tensor | None,
    b: torch.Tensor | None, split: int, passive: str, scale: str, clamp: float,
    atan_k: float, eps: float, inverse: bool, check: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(out, logdet, err). Forward: y_a = (x_a a + b) e^s + t, y_p = x_p a + b, err (B,) with check
    else (0,); inverse: x_a = ((y_a - t) e^{-s} - b) / a, x_p = (y_p - b) / a, logdet negated."""
    if inverse and check:
        raise ValueError("check (the round-trip error) applies to the forward only (inverse=False)")
    v = input.contiguous()
    c = _call(v, s_raw, t, a, split, passive, scale, clamp, atan_k, eps)
    out = torch.empty_like(v)
    ld_part = torch.empty((c.B, c.tiles.n_cblk * c.tiles.n_sblk), dtype=c.acc, device=v.device)
    err_part = torch.empty_like(ld_part) if check else ld_part
    _launch(_INV if inverse else _FWD, c, v, c.s_raw, c.t, a, b, out, ld_part, err_part,
            INVERSE=inverse, CHECK=check)
    err = err_part.amax(1) if check else ld_part.new_empty((0,))
    logdet = _logdet(ld_part, a, c)
    return out, -logdet if inverse else logdet, err


def _backward(inverse: bool, grad: torch.Tensor, grad_logdet: torch.Tensor,
              v: torch.Tensor, s_raw: torch.Tensor, t: torch.Tensor, a: torch.Tensor | None,
              b: torch.Tensor | None, split: int, passive: str, scale: str, clamp: float,
              atan_k: float, eps: float) -> tuple[torch.Tensor, ...]:
    """(grad_v, grad_s_raw, grad_t, grad_a, grad_b) of the forward (v = x, grad = grad_y) or of
    the inverse (v = y, grad = grad_x); grad_a/b are (0,) without a/b.

    grad_a adds the actnorm log-det term sign * S * sum_b gl_b / a (sign -1 for the inverse).
    """
    v, grad, grad_logdet = v.contiguous(), grad.contiguous(), grad_logdet.contiguous()
    c = _call(v, s_raw, t, a, split, passive, scale, clamp, atan_k, eps, with_t=inverse)
    g_main = torch.empty_like(v)
    gs = torch.empty(c.s_raw.shape, dtype=v.dtype, device=v.device)
    gt = torch.empty_like(gs)
    ga_part = gb_part = None
    if a is not None:
        ga_part = torch.empty((c.tiles.n_bblk * c.tiles.n_sblk, c.C), dtype=c.acc, device=v.device)
        gb_part = torch.empty_like(ga_part)
    _launch(_INV_BWD if inverse else _FWD_BWD, c, grad, grad_logdet, v, c.s_raw, c.t, a, b,
            g_main, gs, gt, ga_part, gb_part, INVERSE=inverse)
    if a is None:
        return g_main, gs, gt, v.new_empty((0,)), v.new_empty((0,))
    sign = -1.0 if inverse else 1.0
    ga = ga_part.sum(0) + sign * grad_logdet.to(c.acc).sum() * c.S / a.to(c.acc)
    return g_main, gs, gt, ga.to(a.dtype), gb_part.sum(0).to(a.dtype)


@triton_op("flowkern::coupling_backward_triton", mutates_args=())
def coupling_backward_triton(
    grad_out: torch.Tensor, grad_logdet: torch.Tensor, input: torch.Tensor, s_raw: torch.Tensor,
    t: torch.Tensor, a: torch.Tensor | None, b: torch.Tensor | None, split: int,
    passive: str, scale: str, clamp: float, atan_k: float, eps: float, inverse: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grad_input, grad_s_raw, grad_t, grad_a, grad_b) of :func:`coupling_triton`; grad_a/b are (0,)
    without a/b."""
    return _backward(inverse, grad_out, grad_logdet, input, s_raw, t, a, b, split, passive, scale, clamp,
                     atan_k, eps)


autograd.register(coupling_triton, coupling_backward_triton, n_tensors=5)
