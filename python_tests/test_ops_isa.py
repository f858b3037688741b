"""The CPU op's per-ISA kernel tables, each run against a plain-torch formula.

For each ATEN_CPU_CAPABILITY level (default / avx2 / avx512) a subprocess loads the compiled op
library directly (``torch.ops.load_library`` of ``flowkern/_C*.so``, no ``import flowkern``),
checks that ``torch.ops.flowkern.cpu_kernel_isa()`` names the table ATen's capability selects,
and compares ``torch.ops.flowkern.coupling`` (forward, inverse) and ``coupling_backward`` with
the formula below, for float32 / float64, odd sizes, both passive halves and all four scales.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIBS = sorted(glob.glob(os.path.join(ROOT, "flowkern", "_C.*.so")) + glob.glob(os.path.join(ROOT, "flowkern", "_C.so")))


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


FLAGS = _cpu_flags()
LEVELS = [
    # (ATEN_CPU_CAPABILITY, expected cpu_kernel_isa(), /proc/cpuinfo flags needed)
    ("default", "base", ()),
    ("avx2", "avx2", ("avx2", "fma")),
    ("avx512", "avx512", ("avx512f", "avx512bw", "avx512vl", "avx512dq")),
]

# Runs in the subprocess: argv[1] = library, argv[2] = expected ISA name.
CHILD = r'''
import itertools, sys
import torch

torch.ops.load_library(sys.argv[1])
F = torch.ops.flowkern
isa = F.cpu_kernel_isa()
assert isa == sys.argv[2], f"cpu_kernel_isa() = {isa!r}, expected {sys.argv[2]!r}"

CLAMP, ATAN_K = 1.7, 0.636


def f_scale(s, scale, eps):
    if scale == "exp":
        return s
    if scale == "tanh":
        return CLAMP * torch.tanh(s / CLAMP)
    if scale == "atan":
        return CLAMP * ATAN_K * torch.atan(s / CLAMP)
    u = s + 2
    return torch.nn.functional.logsigmoid(u) if eps == 0 else torch.log(torch.sigmoid(u) + eps)


def formula(x, s_raw, t, a, b, split, passive, scale, eps):
    """y, logdet of the forward (plain torch; x (B, C, *S))."""
    C, S = x.shape[1], x[0, 0].numel()
    if a is None:
        a, b = torch.ones(C, dtype=x.dtype), torch.zeros(C, dtype=x.dtype)
    shape = (1, C) + (1,) * (x.dim() - 2)
    z = x * a.view(shape) + b.view(shape)
    s = f_scale(s_raw, scale, eps)
    if passive == "first":
        y = torch.cat([z[:, :split], z[:, split:] * torch.exp(s) + t], 1)
    else:
        y = torch.cat([z[:, :split] * torch.exp(s) + t, z[:, split:]], 1)
    logdet = S * torch.log(a.abs()).sum() + s.flatten(1).sum(1)
    return y, logdet


def close(got, want, what, tol):
    assert got.shape == want.shape and got.dtype == want.dtype, (what, got.shape, want.shape, got.dtype, want.dtype)
    assert torch.allclose(got, want, rtol=tol, atol=tol), (what, (got - want).abs().max().item())


g = torch.Generator().manual_seed(0)
B, C, split = 7, 13, 6
n = 0
for dtype, S, passive, scale, actnorm in itertools.product(
        (torch.float32, torch.float64), ((), (5, 3)), ("first", "second"),
        ("exp", "tanh", "atan", "sigmoid"), (False, True)):
    tol = 2e-5 if dtype == torch.float32 else 1e-11
    eps = 1e-3 if (scale == "sigmoid" and actnorm) else 0.0
    c_act = C - split if passive == "first" else split
    x = torch.randn(B, C, *S, generator=g, dtype=dtype)
    s_raw = torch.randn(B, c_act, *S, generator=g, dtype=dtype)
    t = torch.randn(B, c_act, *S, generator=g, dtype=dtype)
    a = (torch.rand(C, generator=g, dtype=dtype) + 0.5) * torch.where(torch.arange(C) % 3 == 0, -1.0, 1.0).to(dtype) if actnorm else None
    b = torch.randn(C, generator=g, dtype=dtype) if actnorm else None
    cfg = (split, passive, scale, CLAMP, ATAN_K, eps)
    acc = torch.float64 if dtype == torch.float64 else torch.float32

    # forward, with the round-trip check
    leaves = [v.clone().requires_grad_() for v in (x, s_raw, t) + ((a, b) if actnorm else ())]
    xl, rl, tl = leaves[:3]
    al, bl = (leaves[3], leaves[4]) if actnorm else (None, None)
    y_ref, ld_ref = formula(xl, rl, tl, al, bl, split, passive, scale, eps)
    y, ld, err = F.coupling(x, s_raw, t, a, b, *cfg, False, True)
    close(y, y_ref.detach(), "y", tol)
    close(ld, ld_ref.detach().to(acc), "logdet", tol * 10)
    assert err.shape == (B,) and err.dtype == acc and float(err.max()) < tol * 10, err

    # inverse: y -> x, logdet of the inverse = -forward
    x2, ld2, err2 = F.coupling(y, s_raw, t, a, b, *cfg, True, False)
    close(x2, x, "x (inverse)", tol * 10)
    close(ld2, -ld, "logdet (inverse)", tol * 10)
    assert err2.shape == (0,)

    # backward of the forward, against autograd of the formula
    gy = torch.randn(y.shape, generator=g, dtype=dtype)
    gl = torch.randn(B, generator=g, dtype=acc)
    ref = torch.autograd.grad((y_ref * gy).sum() + (ld_ref * gl.to(dtype)).sum(), leaves)
    got = F.coupling_backward(gy, gl, x, s_raw, t, a, b, *cfg, False)
    for name, gv, rv in zip(("x", "s_raw", "t", "a", "b"), got, ref):
        close(gv, rv, "grad_" + name + " (forward)", tol * 10)
    if not actnorm:
        assert got[3].shape == (0,) and got[4].shape == (0,)

    # backward of the inverse: x = inverse(y), against autograd through the formula's inverse
    yl = y.clone().requires_grad_()
    inv_leaves = [yl] + [v.clone().requires_grad_() for v in (s_raw, t) + ((a, b) if actnorm else ())]
    _, rl2, tl2 = inv_leaves[:3]
    al2, bl2 = (inv_leaves[3], inv_leaves[4]) if actnorm else (None, None)
    ones = torch.ones(C, dtype=dtype)
    aa, bb = (al2, bl2) if actnorm else (ones, ones * 0)
    shape = (1, C) + (1,) * (x.dim() - 2)
    s = f_scale(rl2, scale, eps)
    if passive == "first":
        z = torch.cat([yl[:, :split], (yl[:, split:] - tl2) * torch.exp(-s)], 1)
    else:
        z = torch.cat([(yl[:, :split] - tl2) * torch.exp(-s), yl[:, split:]], 1)
    x_ref = (z - bb.view(shape)) / aa.view(shape)
    S_n = x[0, 0].numel()
    ldi_ref = -(S_n * torch.log(aa.abs()).sum() + s.flatten(1).sum(1))
    close(x_ref.detach(), x2, "x_ref", tol * 10)
    gx = torch.randn(x.shape, generator=g, dtype=dtype)
    ref = torch.autograd.grad((x_ref * gx).sum() + (ldi_ref * gl.to(dtype)).sum(), inv_leaves)
    got = F.coupling_backward(gx, gl, y, s_raw, t, a, b, *cfg, True)
    for name, gv, rv in zip(("y", "s_raw", "t", "a", "b"), got, ref):
        close(gv, rv, "grad_" + name + " (inverse)", tol * 100)
    n += 1
print("ok", isa, n)
'''


@pytest.mark.skipif(not LIBS, reason="flowkern/_C*.so is not built (python setup.py build_ext --inplace)")
@pytest.mark.parametrize("level,isa,needs", LEVELS, ids=[lv[0] for lv in LEVELS])
def test_cpu_kernel_table_matches_formula(level, isa, needs):
    missing = [f for f in needs if f not in FLAGS]
    if missing:
        pytest.skip(f"this CPU lacks {', '.join(missing)} (/proc/cpuinfo flags): cannot run the {isa} table")
    env = dict(os.environ, ATEN_CPU_CAPABILITY=level)
    proc = subprocess.run([sys.executable, "-c", CHILD, LIBS[0], isa], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().startswith(f"ok {isa}"), proc.stdout
