"""The public fused ops of flowkern (:mod:`flowkern.ops.coupling`) and their reference (the spec)."""

from ..backends.reference import coupling_forward_ref, coupling_inverse_ref
from ..spec import CouplingConfig
from .coupling import coupling_forward, coupling_forward_packed, coupling_inverse, coupling_inverse_packed

__all__ = [
    "coupling_forward",
    "coupling_inverse",
    "coupling_forward_packed",
    "coupling_inverse_packed",
    "coupling_forward_ref",
    "coupling_inverse_ref",
    "CouplingConfig",
]
