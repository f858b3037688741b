"""Fused ops of flowkern (see :mod:`flowkern.ops.coupling`)."""

from . import output_cache
from .coupling import coupling_forward, coupling_forward_packed, coupling_inverse, coupling_inverse_packed
from .coupling_ref import coupling_forward_ref, coupling_inverse_ref
from .spec import CouplingConfig, make_config

__all__ = [
    "output_cache",
    "coupling_forward",
    "coupling_inverse",
    "coupling_forward_packed",
    "coupling_inverse_packed",
    "coupling_forward_ref",
    "coupling_inverse_ref",
    "CouplingConfig",
    "make_config",
]
