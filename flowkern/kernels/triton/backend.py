"""The ``triton`` entry of :mod:`flowkern.backends`, with triton imported lazily.

Runs on CUDA tensors, and on CPU tensors when ``TRITON_INTERPRET=1`` (Triton's
interpreter; how the kernels are tested without a GPU).
"""

from __future__ import annotations

import importlib.util
import os

import torch

from ... import backends
from ...ops.spec import CouplingConfig

__all__ = ["register", "why_unavailable", "forward", "inverse"]


def _interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def why_unavailable(device_type: str) -> str | None:
    """None when the Triton kernels can run on ``device_type`` tensors, else the reason."""
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (pip install triton)"
    if _interpret() and device_type == "cpu":
        return None
    if device_type != "cuda":
        return (f"the triton backend runs on CUDA tensors, not {device_type} "
                "(set TRITON_INTERPRET=1 before importing triton to run its interpreter on CPU)")
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible (torch.cuda.is_available() is False)"
    return None


def _ops():
    from . import ops  # imports triton: only on first use

    return ops


def forward(x, s_raw, t, a, b, cfg: CouplingConfig, check: bool) -> tuple[torch.Tensor, ...]:
    """(y, logdet[, err]) through ``flowkern::coupling_fwd_triton``."""
    y, logdet, err = _ops().coupling_fwd_triton(x, s_raw, t, a, b, *cfg.schema_args, bool(check))
    return (y, logdet, err) if check else (y, logdet)


def inverse(y, s_raw, t, a, b, cfg: CouplingConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, logdet_inverse) through ``flowkern::coupling_inv_triton``."""
    return tuple(_ops().coupling_inv_triton(y, s_raw, t, a, b, *cfg.schema_args))


def register() -> None:
    """Add the ``triton`` backend to :mod:`flowkern.backends`."""
    backends.register(backends.Backend("triton", forward, inverse, why_unavailable))
