"""Property-based fuzzing of the image flows (issue 30, item 7): Glow and RealNVP multi-scale flows
of random levels and depth, fed random inputs — shapes valid and invalid, dtypes, batch sizes
(0 included), channels-last and non-contiguous strided views — in the standard and the
memory-saving mode.

Properties: every valid input gives the standard mode's latents, log-det and parameter gradients
in memory-saving mode (within float32 rounding) and a finite log-prob for finite data; every
invalid input raises flowkern's own TypeError / ValueError (raised in flowkern's code, never
torch's RuntimeError from deep inside a layer).

Example counts: ``ci`` (default) 30 per property, ``long`` (``FLOWKERN_FUZZ=long``,
``scripts/fuzz_long.sh``) 1,000; ``FLOWKERN_FUZZ_IMAGE_EXAMPLES=N`` overrides both.
"""

from __future__ import annotations

import functools
import math
import os
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from flowkern import nn as fnn

from .fuzz_strategies import PROFILE

_IMAGE_EXAMPLES = {"ci": 30, "long": 1000}


def image_example_count() -> int:
    override = os.environ.get("FLOWKERN_FUZZ_IMAGE_EXAMPLES")
    return int(override) if override else _IMAGE_EXAMPLES[PROFILE]


FUZZ = settings(max_examples=image_example_count(), deadline=None, derandomize=PROFILE != "long",
                database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

DTYPES = {"float32": torch.float32, "float64": torch.float64}
FLOWKERN_DIR = str(Path(__import__("flowkern").__file__).resolve().parent)


@dataclass(frozen=True)
class Model:
    kind: str  # "glow" | "realnvp"
    C: int
    levels: int
    depth: int
    dtype: str


@functools.lru_cache(maxsize=None)
def build(m: Model) -> fnn.MultiScaleFlow:
    """A small flow of the drawn structure, its actnorms initialised (the same in both modes)."""
    torch.manual_seed(0)
    size = 2 ** m.levels * 2
    if m.kind == "glow":
        flow = fnn.build_glow((m.C, size, size), levels=m.levels, depth=m.depth, hidden=4, seed=0)
    else:
        flow = fnn.build_realnvp((m.C, size, size), levels=m.levels, hidden=4, n_checker=m.depth,
                                 n_channel=m.depth, n_final=m.depth)
    flow = flow.to(DTYPES[m.dtype])
    g = torch.Generator().manual_seed(1)
    flow(torch.rand(4, m.C, size, size, generator=g, dtype=DTYPES[m.dtype]))
    with torch.no_grad():  # leave the zero-initialised last layers: make every coupling act
        for p in flow.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return flow


models = st.builds(Model, kind=st.sampled_from(["glow", "realnvp"]), C=st.integers(1, 3),
                   levels=st.integers(1, 2), depth=st.integers(1, 2), dtype=st.sampled_from(list(DTYPES)))
LAYOUTS = ("contiguous", "channels_last", "sliced", "transposed")


def make_input(shape: tuple[int, ...], dtype: torch.dtype, layout: str, seed: int) -> torch.Tensor:
    """Finite data of ``shape`` in one of the memory layouts (a view for sliced / transposed)."""
    g = torch.Generator().manual_seed(seed)
    if len(shape) != 4 or layout == "contiguous":
        return torch.rand(shape, generator=g).to(dtype)
    B, C, H, W = shape
    if layout == "channels_last":
        return torch.rand(shape, generator=g).to(dtype).contiguous(memory_format=torch.channels_last)
    if layout == "sliced":
        return torch.rand(B, C + 1, H, 2 * W, generator=g).to(dtype)[:, 1:, :, ::2]
    return torch.rand(B, C, W, H, generator=g).to(dtype).transpose(2, 3)


@st.composite
def valid_cases(draw):
    m = draw(models)
    f = 2 ** m.levels
    H, W = draw(st.integers(1, 3)) * f, draw(st.integers(1, 3)) * f
    B = draw(st.integers(0, 3))
    return m, (B, m.C, H, W), draw(st.sampled_from(LAYOUTS)), draw(st.integers(0, 2**16))


@st.composite
def invalid_cases(draw):
    m = draw(models)
    f = 2 ** m.levels
    B = draw(st.integers(0, 3))
    H, W = f, 2 * f
    kind = draw(st.sampled_from(["channels", "odd_size", "rank_low", "rank_high", "dtype", "int", "not_tensor"]))
    shape, dtype = (B, m.C, H, W), DTYPES[m.dtype]
    if kind == "channels":
        shape = (B, m.C + draw(st.sampled_from([-1, 1, 2])) or m.C + 1, H, W)
    elif kind == "odd_size":
        shape = (B, m.C, H + draw(st.sampled_from([1, f // 2 or 1])), W)
    elif kind == "rank_low":
        shape = draw(st.sampled_from([(B, m.C, H), (B, m.C * H * W), (m.C,)]))
    elif kind == "rank_high":
        shape = (B, m.C, H, W, 1)
    elif kind == "dtype":
        dtype = draw(st.sampled_from([t for t in (torch.float16, torch.bfloat16, torch.float32, torch.float64)
                                      if t != DTYPES[m.dtype]]))
    elif kind == "int":
        dtype = torch.int64
    return m, kind, shape, dtype, draw(st.sampled_from(LAYOUTS)), draw(st.integers(0, 2**16))


def _run(flow: fnn.MultiScaleFlow, x: torch.Tensor, memory_saving: bool):
    flow.memory_saving = memory_saving
    flow.zero_grad()
    xg = x.detach().clone(memory_format=torch.preserve_format).requires_grad_(True) if x.numel() else x
    latents, logdet = flow(xg)
    lp = logdet + sum(flow.standard_normal_log_prob(z) for z in latents)
    (-lp.sum()).backward()
    grads = [None if p.grad is None else p.grad.clone() for p in flow.parameters()]
    return [z.detach() for z in latents], logdet.detach(), lp.detach(), grads


def _close(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    eps = torch.finfo(dtype).eps
    scale = max(1.0, float(a.abs().max()) if a.numel() else 0.0)
    tol = 2e3 * eps * scale  # float32 rounding through a few layers, relative to the magnitude
    torch.testing.assert_close(b, a, rtol=0, atol=tol, msg=lambda m: f"{what}: {m}")


@FUZZ
@given(case=valid_cases())
@example(case=(Model("glow", 3, 2, 1, "float32"), (0, 3, 8, 8), "channels_last", 0))  # empty batch
@example(case=(Model("realnvp", 2, 1, 2, "float64"), (2, 2, 4, 8), "sliced", 1))
def test_valid_input_memory_saving_matches_standard_and_log_prob_is_finite(case):
    m, shape, layout, seed = case
    flow = build(m)
    dtype = DTYPES[m.dtype]
    x = make_input(shape, dtype, layout, seed)
    try:
        std = _run(flow, x, False)
        ms = _run(flow, x, True)
    finally:
        flow.memory_saving = False
    lat_s, ld_s, lp_s, g_s = std
    lat_m, ld_m, lp_m, g_m = ms
    assert ld_s.shape == (shape[0],) and [z.shape[1:] for z in lat_s] == [tuple(s) for s in
                                                                          flow.latent_shapes(shape[1:])]
    assert torch.isfinite(lp_s).all(), "finite data gave a non-finite log-prob"
    for a, b in zip(lat_s, lat_m):
        _close(a, b, dtype, "latent")
    _close(ld_s, ld_m, dtype, "log-det")
    for p, a, b in zip(flow.parameters(), g_s, g_m):
        if a is None or b is None:
            assert (a is None or not a.any()) and (b is None or not b.any())
            continue
        _close(a, b, dtype, f"grad of a parameter of shape {tuple(p.shape)}")


@FUZZ
@given(case=invalid_cases())
@example(case=(Model("glow", 3, 2, 1, "float32"), "dtype", (2, 3, 4, 8), torch.float64, "contiguous", 0))
@example(case=(Model("realnvp", 1, 1, 1, "float32"), "dtype", (1, 1, 2, 4), torch.bfloat16, "sliced", 0))
@example(case=(Model("glow", 2, 1, 1, "float64"), "odd_size", (2, 2, 3, 4), torch.float64, "contiguous", 0))
def test_invalid_input_raises_flowkerns_error(case):
    m, kind, shape, dtype, layout, seed = case
    flow = build(m)
    if kind == "not_tensor":
        x = make_input(shape, DTYPES[m.dtype], "contiguous", seed).tolist()
    elif dtype == torch.int64:
        x = torch.randint(0, 255, shape, generator=torch.Generator().manual_seed(seed))
    else:
        x = make_input(shape, dtype, layout, seed)
    for memory_saving in (False, True):
        flow.memory_saving = memory_saving
        try:
            flow.log_prob(x)
        except (TypeError, ValueError) as e:
            assert not isinstance(e, RuntimeError), f"{kind}: {type(e).__name__} is also torch's RuntimeError"
            where = traceback.extract_tb(e.__traceback__)[-1].filename
            assert str(Path(where).resolve()).startswith(FLOWKERN_DIR), \
                f"{kind}: {type(e).__name__} ({e}) raised in {where}, not in flowkern"
            assert math.isfinite(len(str(e))) and str(e)
        else:
            raise AssertionError(f"{kind} input of shape {shape} and dtype {dtype} did not raise")
        finally:
            flow.memory_saving = False
