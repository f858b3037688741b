"""Invertible flow layers on the fused coupling op, flows with an O(1)-memory backward,
and :func:`build_flow` (the CompVis flat coupling flow)."""

from .actnorm import ActNorm
from .base import InvertibleModule, collect_check_errors, detect_overflow
from .builders import build_flow
from .conditional import ConditionalAffineCoupling
from .coupling import ActNormCoupling, AffineCoupling, SeparateNets
from .double import DoubleAffineCoupling
from .embedder import ConvEmbedder, Embedder, MLPEmbedder
from .flow import ConditionalFlow, Flow
from .invconv import InvConv1x1
from .permute import Permute, Reverse, Shuffle
from .subnets import MLP

__all__ = [
    "InvertibleModule",
    "ActNorm",
    "AffineCoupling",
    "ActNormCoupling",
    "ConditionalAffineCoupling",
    "DoubleAffineCoupling",
    "SeparateNets",
    "Permute",
    "Shuffle",
    "Reverse",
    "InvConv1x1",
    "Embedder",
    "MLPEmbedder",
    "ConvEmbedder",
    "MLP",
    "Flow",
    "ConditionalFlow",
    "build_flow",
    "collect_check_errors",
    "detect_overflow",
]
