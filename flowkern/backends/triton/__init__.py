"""The ``triton`` backend: Triton kernels of the fused coupling op, with triton imported lazily.

Runs on CUDA tensors, and on CPU tensors when ``TRITON_INTERPRET=1`` (Triton's interpreter;
how the kernels are tested without a GPU). Importing this package does not import triton
(``TRITON_INTERPRET`` must be settable before triton's first import): :mod:`.ops`, which
registers ``flowkern::coupling_triton``, is imported on the first call.
"""

from __future__ import annotations

import importlib.util
import os

import torch

from ...spec import check_call

__all__ = ["BACKEND", "why_unavailable", "run"]


def why_unavailable(device_type: str) -> str | None:
    """None when the Triton kernels can run on ``device_type`` tensors, else the reason."""
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (pip install triton)"
    if os.environ.get("TRITON_INTERPRET", "0") == "1" and device_type == "cpu":
        return None
    if device_type != "cuda":
        return (f"the triton backend runs on CUDA tensors, not {device_type} "
                "(set TRITON_INTERPRET=1 before importing triton to run its interpreter on CPU)")
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible (torch.cuda.is_available() is False)"
    return None


def run(inp, s_raw, t, a, b, cfg_args: tuple, inverse: bool, check: bool) -> tuple:
    """(out, logdet, err) through ``flowkern::coupling_triton``."""
    from .ops import coupling_triton  # imports triton: only on first use

    cfg, s_raw, t = check_call(inp, s_raw, t, a, b, cfg_args, inverse)
    return coupling_triton(inp, s_raw, t, a, b, *cfg.schema_args, inverse, check)


def _make_backend():
    from .. import Backend  # the package imports this module while it builds its registry

    return Backend("triton", run, why_unavailable)


BACKEND = _make_backend()
