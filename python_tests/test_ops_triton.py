"""The Triton backend: kernels vs the reference under TRITON_INTERPRET=1, dispatch, tiles.

The kernel cases live in ``triton_interp_cases.py`` and run in a pytest subprocess, because
TRITON_INTERPRET must be set before triton is first imported, which this process cannot
guarantee.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import flowkern
from flowkern.backends import BackendUnavailableError
from flowkern.backends.triton.tiles import TILE_ELEMS, pick_tiles

from .helpers import make_case

ROOT = Path(__file__).resolve().parent.parent


def test_interpreted_kernels_match_reference():
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-p", "no:logging",
         "python_tests/triton_interp_cases.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
    assert proc.returncode == 0, tail
    assert " passed" in tail and "skipped" not in tail, tail


def test_importing_flowkern_does_not_import_triton():
    code = "import sys, flowkern; assert 'triton' in flowkern.backends._REGISTRY; " \
           "print('triton' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("False")


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="interpreter is on here")
def test_forcing_triton_on_cpu_raises_with_the_reason():
    x, s_raw, t, a, b, kw = make_case()
    with pytest.raises(BackendUnavailableError, match="TRITON_INTERPRET=1"):
        flowkern.coupling_forward(x, s_raw, t, a, b, backend="triton", **kw)
    with flowkern.backends.use("triton"), pytest.raises(BackendUnavailableError, match="triton"):
        flowkern.coupling_inverse(x, s_raw, t, a, b, **kw)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
def test_triton_on_cuda_without_gpu_is_unavailable_with_reason():
    reason = flowkern.backends.available("cuda")["triton"]
    assert reason is not None and "GPU" in reason


@pytest.mark.parametrize("B,C,S", [(65536, 256, 1), (256, 64, 1), (64, 64, 1024), (3, 7, 13),
                                   (1, 1000, 1), (2, 3, 5000)])
def test_tiles_cover_the_tensor_within_budget(B, C, S):
    tl = pick_tiles(B, C, S)
    tile = tl.BLOCK_B * tl.BLOCK_C * tl.BLOCK_S
    assert tile <= TILE_ELEMS and 1 <= tl.num_warps <= 8
    for blk in (tl.BLOCK_B, tl.BLOCK_C, tl.BLOCK_S):
        assert blk & (blk - 1) == 0  # power of two
    assert tl.n_bblk * tl.BLOCK_B >= B and (tl.n_bblk - 1) * tl.BLOCK_B < B
    assert tl.n_cblk * tl.BLOCK_C >= C and (tl.n_cblk - 1) * tl.BLOCK_C < C
    assert tl.n_sblk * tl.BLOCK_S >= S and (tl.n_sblk - 1) * tl.BLOCK_S < S
    if S == 1:
        assert tl.BLOCK_S == 1  # vectors: the tile is rows x channels


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.compile of "
                    "wrap_triton does not support the interpreter's CPU tensors)")
def test_torch_compile_fullgraph_on_gpu():
    from flowkern.backends.triton import ops  # noqa: F401  (registers torch.ops entries)
    from flowkern.ops import CouplingConfig, coupling_forward_ref

    x, s_raw, t, a, b, kw = make_case(3, 6, (4,), layout="halves", device="cuda")

    @torch.compile(fullgraph=True)
    def f(x_, s_, t_, a_, b_):
        return torch.ops.flowkern.coupling_triton(x_, s_, t_, a_, b_, kw["split"], "first", "tanh",
                                                  1.0, 0.5, 0.0, False, False)

    y, logdet, err = f(x, s_raw, t, a, b)
    y_ref, ld_ref = coupling_forward_ref(x, s_raw, t, a, b,
                                         CouplingConfig(kw["split"], "first", "tanh", atan_k=0.5))
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(logdet, ld_ref)
    assert err.shape == (0,)
