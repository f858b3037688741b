"""Shared fixtures of the flowkern.nn tests (no tests here).

``op_backend`` runs each test on the C++ cpu backend when its kernels are registered,
else on the reference backend, so layer tests do not depend on the kernel work in
progress.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import warnings

import pytest
import torch

import flowkern
from flowkern.nn import InvertibleModule


_PROBE = """
import torch, flowkern
for dtype in (torch.float32, torch.float64):
    for ab in (False, True):
        x = torch.randn(3, 5, dtype=dtype, requires_grad=True)
        h = torch.randn(3, 6, dtype=dtype, requires_grad=True)
        a = b = None
        if ab:
            a = torch.rand(5, dtype=dtype, requires_grad=True) + 0.5
            b = torch.randn(5, dtype=dtype, requires_grad=True)
        y, ld = flowkern.coupling_forward(x, h[:, :3], h[:, 3:], a, b, split=2, backend="cpu")
        y.sum().backward()
        ld.sum().backward()
"""


@functools.cache
def working_cpu_backend() -> str:
    """'cpu' if the C++ kernels run forward and backward (probed in a subprocess, so a
    crashing kernel cannot take the test session down), else 'reference'.
    ``FLOWKERN_BACKEND`` overrides."""
    if os.environ.get("FLOWKERN_BACKEND"):
        return os.environ["FLOWKERN_BACKEND"]
    if flowkern.backends.available("cpu").get("cpu") is not None:
        return "reference"
    probe = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, timeout=300)
    if probe.returncode != 0:
        warnings.warn("flowkern.nn tests: the cpu backend failed a forward/backward probe "
                      f"(exit {probe.returncode}); running on the reference backend")
        return "reference"
    return "cpu"


@pytest.fixture(autouse=True)
def op_backend():
    name = working_cpu_backend()
    with flowkern.backends.use(name):
        yield name


def brute_force_logdet(module: InvertibleModule, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
    """log|det dy/dx| per sample from the full Jacobian (float64, module in eval mode)."""
    out = []
    for i in range(x.shape[0]):
        ci = None if c is None else c[i : i + 1]
        J = torch.autograd.functional.jacobian(lambda v: module(v[None], ci)[0][0], x[i])
        n = x[i].numel()
        out.append(torch.linalg.slogdet(J.reshape(n, n))[1])
    return torch.stack(out)
