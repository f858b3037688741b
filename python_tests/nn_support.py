"""Shared helpers of the flowkern.nn tests."""

from __future__ import annotations

import torch

from flowkern.nn import InvertibleModule


def brute_force_logdet(module: InvertibleModule, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
    """log|det dy/dx| per sample from the full Jacobian (float64, module in eval mode)."""
    out = []
    for i in range(x.shape[0]):
        ci = None if c is None else c[i : i + 1]
        J = torch.autograd.functional.jacobian(lambda v: module(v[None], ci)[0][0], x[i])
        n = x[i].numel()
        out.append(torch.linalg.slogdet(J.reshape(n, n))[1])
    return torch.stack(out)
