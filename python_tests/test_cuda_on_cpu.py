"""The CUDA kernels (csrc/cuda/coupling_kernels.cu) run on the CPU through HIP-CPU, against the
reference: forward, inverse, both backwards, the actnorm-parameter reductions, the in-kernel
round-trip error, and the launch geometry for shapes too large to run here.

The module is built by python_tests/hipcpu_build.py (cached in build/hipcpu). Without HIP-CPU or
TBB these tests skip, saying which is missing; under CI (CI=true) they fail instead.
"""

from __future__ import annotations

import os

import pytest
import torch

from flowkern.backends.reference import coupling_forward_ref, coupling_inverse_ref
from flowkern.spec import CouplingConfig

from . import hipcpu_build
from .helpers import SCALES, TOL, make_case, upcast

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
EXTRA = {"exp": {}, "tanh": {"clamp": 1.7}, "atan": {"clamp": 2.0, "atan_k": 0.6},  # as test_ops_cuda.py
         "sigmoid": {"eps": 1e-3}}
VEC = {torch.float32: 4, torch.float64: 2, torch.float16: 8, torch.bfloat16: 8}  # elements per 128 bits
CUDA_LIMITS = (2**31 - 1, 65535)
DT_NAME = {torch.float32: "float32", torch.float64: "float64", torch.float16: "float16",
           torch.bfloat16: "bfloat16"}

# (B, C, spatial, split, passive, layout of s_raw / t). Chosen for: odd and prime sizes; rows
# wider than 16 lanes x the vector width in every dtype (each shuffle step adds data); a last
# row tile that is partly past the end (B C or B not a multiple of 8 warps); a spatial size
# spanning several chunks in every dtype (chunk = 32 lanes x vector x 8 columns <= 2048);
# aligned shapes (the 128-bit paths) and unaligned ones; strided s / t views: the halves of one
# subnet output, normflows' h[:, 0::2] / h[:, 1::2], transposed spatial dims (not flattenable).
SHAPES = [
    (5, 7, (), 3, "first", "interleaved"),  # vectors, odd
    (9, 301, (), 150, "second", "halves"),  # vectors, several lane spans per row in every dtype
    (17, 64, (), 32, "first", "contiguous"),  # vectors, 128-bit s / t loads, last tile 1 row of 8
    (3, 5, (13,), 2, "first", "interleaved"),  # image, prime sizes
    (2, 6, (3, 7), 3, "second", "transposed"),  # 2-d image, s / t with transposed spatial dims
    (2, 3, (5003,), 1, "first", "halves"),  # prime S over several chunks (3+ in every dtype)
    (3, 4, (8, 64), 2, "first", "contiguous"),  # S = 512: 128-bit x / s / t / grad accesses
    (1, 2, (2053,), 1, "second", "interleaved"),  # C = 2 (the fewest channels), B = 1
]
SHAPE_IDS = [f"{B}x{C}x{'x'.join(map(str, sp)) or '-'}-{layout}" for B, C, sp, _, _, layout in SHAPES]


@pytest.fixture(scope="module")
def ext():
    why = hipcpu_build.missing()
    if why is not None:
        msg = f"the CPU build of the CUDA kernels cannot be made: {why}"
        if CI:
            pytest.fail(msg + " (CI=true: this must run in CI)", pytrace=False)
        pytest.skip(msg)
    return hipcpu_build.load()


@pytest.fixture
def grid_limits(ext):
    """Set smaller launch-grid limits for one test (restored after)."""
    yield ext.set_grid_limits
    ext.set_grid_limits(*CUDA_LIMITS)


def _case(shape, dtype, actnorm=True, seed=0):
    B, C, spatial, split, passive, layout = shape
    transposed = layout == "transposed"
    x, s_raw, t, a, b, kw = make_case(B, C, spatial, split, passive, dtype=dtype,
                                      layout="contiguous" if transposed else layout, actnorm=actnorm, seed=seed)
    if transposed:  # same values, memory with the last two dims swapped: no single spatial stride
        s_raw, t = (v.transpose(-1, -2).contiguous().transpose(-1, -2) for v in (s_raw, t))
        assert not s_raw.is_contiguous()
    return x, s_raw, t, a, b, kw


def _cfg(kw, scale):
    return CouplingConfig(kw["split"], kw["passive"], scale, **EXTRA[scale])


def _tol(dtype):
    return TOL[dtype] if dtype != torch.float64 else (1e-9, 1e-9)  # as test_ops_cuda.py


def _ld_tol(dtype, x):
    return 1e-9 if dtype == torch.float64 else 2e-5 * max(1, x[0].numel())  # as test_ops_cuda.py


def _fwd(ext, x, s_raw, t, a, b, cfg, inverse=False, check=False):
    return ext.coupling(x, s_raw, t, a, b, *cfg.schema_args, inverse, check)


def _emulated_err(x, y, s_raw, t, a, b, cfg):
    """The in-kernel round-trip error: the inverse, in the accumulation type, of y as stored."""
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    x_acc, s_acc, t_acc, a_acc, b_acc = upcast(x, s_raw, t, a, b, dtype=acc)
    x_rec, _ = coupling_inverse_ref(y.to(acc), s_acc, t_acc, a_acc, b_acc, cfg)
    diff = (x_rec - x_acc).abs().flatten(1)
    return diff.amax(1) if diff.shape[1] else diff.new_zeros(x.shape[0])


# ---- forward and inverse, the round-trip error ---------------------------------------------
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_forward_inverse_and_check_match_reference(ext, shape, scale, dtype):
    actnorm = (SCALES.index(scale) + SHAPES.index(shape)) % 2 == 0  # with and without, per dtype
    x, s_raw, t, a, b, kw = _case(shape, dtype, actnorm)
    cfg = _cfg(kw, scale)
    atol, rtol = _tol(dtype)
    ld_tol = _ld_tol(dtype, x)

    y, logdet, err = _fwd(ext, x, s_raw, t, a, b, cfg, check=True)
    y_ref, ld_ref = coupling_forward_ref(*upcast(x, s_raw, t, a, b), cfg)
    assert y.dtype == dtype and y.shape == x.shape and logdet.shape == err.shape == (x.shape[0],)
    torch.testing.assert_close(y.double(), y_ref, atol=atol, rtol=rtol)
    torch.testing.assert_close(logdet.double(), ld_ref, atol=ld_tol, rtol=1e-5)
    # err is the max over each sample of |inverse(y as stored) - x|: every warp's, every chunk's
    emulated = _emulated_err(x, y, s_raw, t, a, b, cfg)
    scale_x = max(1.0, float(x.abs().max()), float(y_ref.abs().max()))
    torch.testing.assert_close(err.double(), emulated.double(), atol=4e-6 * scale_x if dtype != torch.float64
                               else 1e-13 * scale_x, rtol=1e-3)
    assert float(err.max()) < 8 * atol * scale_x

    y_nc, ld_nc, err_nc = _fwd(ext, x, s_raw, t, a, b, cfg)  # without check: same y, no err
    assert torch.equal(y_nc, y) and torch.equal(ld_nc, logdet) and err_nc.numel() == 0

    x2, ld_inv, err_inv = _fwd(ext, y, s_raw, t, a, b, cfg, inverse=True)
    assert err_inv.numel() == 0
    x_ref, ld_inv_ref = coupling_inverse_ref(*upcast(y, s_raw, t, a, b), cfg)
    torch.testing.assert_close(x2.double(), x_ref, atol=atol, rtol=rtol)
    torch.testing.assert_close(ld_inv.double(), ld_inv_ref, atol=ld_tol, rtol=1e-5)


# ---- backward of both directions, grad_a / grad_b ------------------------------------------
def _grads_ref(direction, g_out, g_logdet, inp, s_raw, t, a, b, cfg):
    leaves = [v.detach().double().requires_grad_(True) for v in (inp, s_raw, t, a, b) if v is not None]
    args = leaves[:3] + (leaves[3:] if a is not None else [None, None])
    fn = coupling_forward_ref if direction == "fwd" else coupling_inverse_ref
    out, logdet = fn(*args, cfg)[:2]
    loss = (out * g_out.double()).sum() + (logdet * g_logdet.double()).sum()
    grads = torch.autograd.grad(loss, leaves)
    return list(grads) + ([None, None] if a is None else [])


def _assert_grads(got, want, dtype, names):
    atol, rtol = _tol(dtype)
    for name, g, w in zip(names, got, want):
        if w is None:
            assert g.numel() == 0, name
            continue
        assert g.dtype == dtype and g.shape == w.shape, name
        # grad_a / grad_b sum over the batch and positions: relative to their magnitude
        scale = max(1.0, float(w.abs().max())) if w.numel() else 1.0
        torch.testing.assert_close(g.double(), w, atol=atol * scale, rtol=rtol, msg=lambda m: f"{name}: {m}")


def _backward_inputs(ext, shape, dtype, scale, direction, actnorm):
    x, s_raw, t, a, b, kw = _case(shape, dtype, actnorm, seed=1)
    cfg = _cfg(kw, scale)
    inp = x if direction == "fwd" else _fwd(ext, x, s_raw, t, a, b, cfg)[0]
    g = torch.Generator().manual_seed(7)
    g_out = torch.randn(inp.shape, generator=g, dtype=torch.float64).to(dtype)
    g_logdet = torch.randn(inp.shape[0], generator=g, dtype=torch.float64)
    g_logdet = g_logdet.to(torch.float64 if dtype == torch.float64 else torch.float32)
    return inp, s_raw, t, a, b, cfg, g_out, g_logdet


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("direction", ["fwd", "inv"])
def test_backward_matches_reference_autograd(ext, shape, scale, dtype, direction):
    actnorm = (SCALES.index(scale) + SHAPES.index(shape) + DTYPES.index(dtype)) % 2 == 0
    inp, s_raw, t, a, b, cfg, g_out, g_logdet = _backward_inputs(ext, shape, dtype, scale, direction, actnorm)
    got = ext.coupling_backward(g_out, g_logdet, inp, s_raw, t, a, b, *cfg.schema_args, direction == "inv")
    want = _grads_ref(direction, g_out, g_logdet, inp, s_raw, t, a, b, cfg)
    _assert_grads(got, want, dtype, ["grad_input", "grad_s_raw", "grad_t", "grad_a", "grad_b"])


# ---- packed h (the subnet output [s_raw | t]) ------------------------------------------------
@pytest.mark.parametrize("shape", [SHAPES[1], SHAPES[3], SHAPES[6]], ids=[SHAPE_IDS[i] for i in (1, 3, 6)])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("direction", ["fwd", "inv"])
def test_packed_matches_reference(ext, shape, dtype, direction):
    x, s_raw, t, a, b, kw = _case(shape[:5] + ("halves",), dtype, seed=2)
    h = s_raw._base
    assert h is not None and torch.equal(torch.cat([s_raw, t], 1), h)
    cfg = _cfg(kw, "atan")
    inverse = direction == "inv"
    inp = x if not inverse else _fwd(ext, x, s_raw, t, a, b, cfg)[0]
    out, logdet, err = ext.coupling_packed(inp, h, a, b, *cfg.schema_args, inverse, not inverse)
    out_u, logdet_u, err_u = _fwd(ext, inp, s_raw, t, a, b, cfg, inverse=inverse, check=not inverse)
    assert torch.equal(out, out_u) and torch.equal(logdet, logdet_u) and torch.equal(err, err_u)

    g = torch.Generator().manual_seed(5)
    g_out = torch.randn(inp.shape, generator=g, dtype=torch.float64).to(dtype)
    g_logdet = torch.randn(inp.shape[0], generator=g, dtype=torch.float64).to(logdet.dtype)
    g_in, g_h, g_a, g_b = ext.coupling_backward_packed(g_out, g_logdet, inp, h, a, b, *cfg.schema_args, inverse)
    w_in, w_s, w_t, w_a, w_b = _grads_ref(direction, g_out, g_logdet, inp, s_raw, t, a, b, cfg)
    assert g_h.shape == h.shape
    _assert_grads([g_in, g_h, g_a, g_b], [w_in, torch.cat([w_s, w_t], 1), w_a, w_b], dtype,
                  ["grad_input", "grad_h", "grad_a", "grad_b"])


# ---- empty and degenerate shapes -----------------------------------------------------------
@pytest.mark.parametrize("shape", [(0, 6, ()), (0, 4, (5,)), (3, 4, (0,)), (2, 4, (3, 0))], ids=str)
@pytest.mark.parametrize("actnorm", [True, False])
def test_empty_batch_and_empty_spatial(ext, shape, actnorm):
    B, C, spatial = shape
    x, s_raw, t, a, b, kw = make_case(B, C, spatial, 2, dtype=torch.float32, actnorm=actnorm)
    cfg = _cfg(kw, "tanh")
    y, logdet, err = _fwd(ext, x, s_raw, t, a, b, cfg, check=True)
    y_ref, ld_ref = coupling_forward_ref(x, s_raw, t, a, b, cfg)
    assert y.shape == x.shape and logdet.shape == err.shape == (B,)
    torch.testing.assert_close(logdet, ld_ref)
    assert torch.all(err == 0)
    for inverse in (False, True):
        g_out, g_logdet = torch.ones_like(x), torch.ones(B)
        got = ext.coupling_backward(g_out, g_logdet, x, s_raw, t, a, b, *cfg.schema_args, inverse)
        want = _grads_ref("inv" if inverse else "fwd", g_out, g_logdet, x, s_raw, t, a, b, cfg)
        _assert_grads(got, want, torch.float32, ["grad_input", "grad_s_raw", "grad_t", "grad_a", "grad_b"])


def test_bad_arguments_raise(ext):
    x, s_raw, t, a, b, kw = make_case(2, 4, (3,), 2)
    cfg = _cfg(kw, "exp")
    with pytest.raises(ValueError, match="split must be in"):  # C = 1 has no split
        ext.coupling(x[:, :1], s_raw[:, :1], t[:, :1], None, None, 1, "first", "exp", 1.0, 1.0, 0.0, False, False)
    with pytest.raises(ValueError, match="s_raw must have shape"):
        _fwd(ext, x, s_raw[:, :1], t, a, b, cfg)
    with pytest.raises(TypeError, match="must be float16, bfloat16, float32 or float64"):
        _fwd(ext, x.int(), s_raw, t, a, b, cfg)


# ---- launch geometry: large shapes --------------------------------------------------------
def _covers(geo, dtype):
    """The grid's blocks, warps and lanes reach every (row, column) exactly as make_geometry says."""
    V = VEC[dtype]
    R, K, chunk = geo["R"], geo["K"], geo["chunk"]
    assert chunk % (32 * V) == 0 and chunk > 0
    assert chunk == 32 * V if geo["rows_are_samples"] else chunk <= 32 * V * 8
    assert geo["n_chunks"] * chunk >= K and (geo["n_chunks"] - 1) * chunk < max(K, 1)
    assert geo["n_row_tiles"] * geo["warps"] >= R and (geo["n_row_tiles"] - 1) * geo["warps"] < max(R, 1)
    gx, gy = geo["grid"]
    assert (gx, gy) == ((geo["n_chunks"], geo["n_row_tiles"]) if geo["chunks_in_x"]
                        else (geo["n_row_tiles"], geo["n_chunks"]))
    assert geo["ld_part_size"] == R * geo["n_chunks"]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("B, C, S", [
    (64, 4, 2**24),  # B x C x S = 2^32 elements (> 2^31): int64 index math, grid well within limits
    (3, 5, 2**29 + 7),  # one row > 2^31 / 4 elements, odd C: > 65,535 chunks -> chunks in grid x
    (1, 2, 8192 * 8192),  # a 2-channel 8192 x 8192 image: > 65,535 chunks in fp64 / fp32
    (2**21, 3, 1024),  # 6.3M rows: 786,432 row tiles in grid x (> 65,535)
    (2**27, 17, 1),  # vectors, 2^27 samples: 2^24 row tiles
    (4, 2**24 + 1, 1),  # vectors with 16.8M channels: > 65,535 chunks of one lane span -> grid x
    (7, 3, 1),  # C odd, small
    (5, 1, 1000),  # C = 1 (no valid split for the op, which refuses it; the arithmetic holds)
])
def test_geometry_of_large_shapes_fits_cuda_limits(ext, dtype, B, C, S):
    split = C // 2
    geo = ext.geometry(DT_NAME[dtype], B, C, S, C - split, split)
    assert (geo["R"], geo["K"]) == ((B, C) if S == 1 else (B * C, S))
    assert geo["fits"], geo
    gx, gy = geo["grid"]
    assert 1 <= gx <= CUDA_LIMITS[0] and 1 <= gy <= CUDA_LIMITS[1], geo
    _covers(geo, dtype)
    assert geo["chunks_in_x"] == (geo["n_chunks"] > CUDA_LIMITS[1])
    if S > 2**28:  # the case the old grid (row tiles, chunks) could not launch
        assert geo["chunks_in_x"] and gy == geo["n_row_tiles"]


@pytest.mark.parametrize("B, C, S, why", [
    (2**20, 2, 2**30, "both grid dims past their limits"),
    (2**31, 2, 1, "reduce_rows: one block per sample"),
    (2**36, 4, 2, "row tiles past grid x"),
])
def test_geometry_too_large_for_one_launch_is_reported(ext, B, C, S, why):
    geo = ext.geometry("float16", B, C, S, C // 2, C // 2)
    assert not geo["fits"], why


CHUNKED = [(6, 301, (), 150, "second", "halves"), SHAPES[5], SHAPES[7]]  # 2+ chunks, 1 row tile


@pytest.mark.parametrize("shape", CHUNKED, ids=["6x301x--halves", SHAPE_IDS[5], SHAPE_IDS[7]])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_chunks_in_grid_x_run_and_match_reference(ext, grid_limits, shape, dtype):
    """The layout for more chunks than grid y admits, run here by lowering the y limit below the
    number of chunks."""
    B, C, spatial, split, passive = shape[:5]
    S = 1
    for d in spatial:
        S *= d
    c_act, act0 = (C - split, split) if passive == "first" else (split, 0)
    max_y = ext.geometry(DT_NAME[dtype], B, C, S, c_act, act0)["n_chunks"] - 1
    geo = ext.geometry(DT_NAME[dtype], B, C, S, c_act, act0, max_y=max_y)
    assert max_y >= 1 and geo["chunks_in_x"] and geo["fits"] and geo["grid"] == (max_y + 1, 1), geo
    grid_limits(CUDA_LIMITS[0], max_y)
    inp, s_raw, t, a, b, cfg, g_out, g_logdet = _backward_inputs(ext, shape, dtype, "sigmoid", "fwd", True)
    y, logdet, err = _fwd(ext, inp, s_raw, t, a, b, cfg, check=True)
    y_ref, ld_ref = coupling_forward_ref(*upcast(inp, s_raw, t, a, b), cfg)
    atol, rtol = _tol(dtype)
    torch.testing.assert_close(y.double(), y_ref, atol=atol, rtol=rtol)
    torch.testing.assert_close(logdet.double(), ld_ref, atol=_ld_tol(dtype, inp), rtol=1e-5)
    torch.testing.assert_close(err.double(), _emulated_err(inp, y, s_raw, t, a, b, cfg).double(),
                               atol=4e-6 * max(1.0, float(y_ref.abs().max())), rtol=1e-3)
    for direction in ("fwd", "inv"):
        inp_d = inp if direction == "fwd" else y
        got = ext.coupling_backward(g_out, g_logdet, inp_d, s_raw, t, a, b, *cfg.schema_args, direction == "inv")
        want = _grads_ref(direction, g_out, g_logdet, inp_d, s_raw, t, a, b, cfg)
        _assert_grads(got, want, dtype, ["grad_input", "grad_s_raw", "grad_t", "grad_a", "grad_b"])
    grid_limits(1, 1)  # now nothing fits: the call says so instead of launching a bad grid
    with pytest.raises(ValueError, match="too large for one launch"):
        _fwd(ext, inp, s_raw, t, a, b, cfg)


# ---- storage rounding ---------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_stores_round_to_nearest_even_as_torch(ext, dtype):
    """The kernels compute in fp32 and store fp16 / bf16 (csrc/cuda/hipcpu/cuda_bf16.h's own
    conversion for bf16): passive channels, y = x a + b, round exactly as torch's conversion,
    overflow to inf and NaN included."""
    g = torch.Generator().manual_seed(3)
    big = 6e4 if dtype == torch.float16 else 3e38
    x = torch.randn(64, 4, 257, generator=g) * torch.logspace(-8, 4, 257)
    x[0, 0, :4] = torch.tensor([float("inf"), float("-inf"), float("nan"), big])
    x = x.to(dtype)
    a = (1 + torch.rand(4, generator=g)).to(dtype)
    a[0] = 1.25  # with x = big: past the largest finite value
    b = (torch.randn(4, generator=g) * 1e-3).to(dtype)
    s_raw = t = torch.zeros(64, 2, 257, dtype=dtype)
    y, _, _ = ext.coupling(x, s_raw, t, a, b, 2, "first", "exp", 1.0, 1.0, 0.0, False, False)
    want = (x.float() * a.float()[:, None] + b.float()[:, None]).to(dtype)
    assert torch.isinf(want[0, 0, 3]) and torch.isnan(want[0, 0, 2])
    torch.testing.assert_close(y[:, :2], want[:, :2], atol=0, rtol=0, equal_nan=True)
