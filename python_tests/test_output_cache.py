"""The C++ CPU backend's cache of large output blocks (csrc/cpu/output_cache.h)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import flowkern
from flowkern.ops import output_cache

pytestmark = pytest.mark.skipif(
    flowkern.backends.available("cpu")["cpu"] is not None, reason="C++ CPU extension not built"
)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIG = (2048, 1031)  # 8.06 MiB in float32: cached; prime C


def _inputs(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g), torch.randn(shape[0], 2 * (shape[1] - shape[1] // 2), generator=g)


def test_freed_large_output_is_reused_and_fully_rewritten():
    output_cache.empty_cache()
    x, h = _inputs(BIG)
    y, _ = flowkern.coupling_forward_packed(x, h, split=BIG[1] // 2)
    y.fill_(float("nan"))  # stale contents a reuse must overwrite everywhere
    ptr, nbytes = y.data_ptr(), y.nbytes
    del y
    assert output_cache.cached_bytes() >= nbytes
    x2, h2 = _inputs(BIG, seed=1)
    y2, ld2 = flowkern.coupling_forward_packed(x2, h2, split=BIG[1] // 2)
    assert y2.data_ptr() == ptr
    want, want_ld = flowkern.coupling_forward_packed(x2, h2, split=BIG[1] // 2, backend="reference")
    torch.testing.assert_close(y2, want, atol=2e-5, rtol=2e-5)
    torch.testing.assert_close(ld2, want_ld, atol=1e-3, rtol=2e-5)


def test_backward_outputs_come_from_the_cache_too():
    output_cache.empty_cache()
    x, h = _inputs(BIG)
    x.requires_grad_(True)
    h.requires_grad_(True)
    y, ld = flowkern.coupling_forward_packed(x, h, split=BIG[1] // 2)
    gx, gh = torch.autograd.grad((y * y).sum() + ld.sum(), (x, h))
    nbytes = y.nbytes + gx.nbytes + gh.nbytes
    del y, gx, gh
    assert output_cache.cached_bytes() >= nbytes


def test_small_outputs_are_not_cached_and_empty_cache_releases():
    output_cache.empty_cache()
    x, h = _inputs((64, 33))
    y, _ = flowkern.coupling_forward_packed(x, h, split=16)
    del y
    assert output_cache.cached_bytes() == 0
    x, h = _inputs(BIG)
    y, _ = flowkern.coupling_forward_packed(x, h, split=BIG[1] // 2)
    del y
    held = output_cache.cached_bytes()
    assert held > 0 and output_cache.empty_cache() == held and output_cache.cached_bytes() == 0


def test_cache_limit_zero_disables_it():
    code = ("import torch, flowkern; from flowkern.ops import output_cache as oc; "
            "y, _ = flowkern.coupling_forward_packed(torch.randn(2048, 1031), torch.randn(2048, 1032), split=515); "
            "del y; print(oc.cached_bytes())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={**os.environ, "FLOWKERN_CPU_CACHE_MB": "0"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "0"
