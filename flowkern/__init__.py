"""flowkern: fused invertible-flow kernels and the interpretation tools built on them."""

from . import backends, check, compat, interpret, nn, ops, spec, translate
from .ops import coupling_forward, coupling_forward_packed, coupling_inverse, coupling_inverse_packed

__version__ = "0.1.0"

__all__ = ["backends", "check", "compat", "interpret", "nn", "ops", "spec", "translate", "coupling_forward",
           "coupling_inverse", "coupling_forward_packed", "coupling_inverse_packed", "__version__"]
