"""Invertible flow layers on the fused coupling op, flows with an O(1)-memory backward,
and :func:`build_flow` (the CompVis flat coupling flow)."""

from .actnorm import ActNorm
from .base import InvertibleModule, collect_check_errors, detect_overflow
from .builders import build_flow, build_glow, build_realnvp
from .conditional import ConditionalAffineCoupling
from .coupling import ActNormCoupling, AffineCoupling, SeparateNets
from .double import DoubleAffineCoupling
from .embedder import ConvEmbedder, Embedder, MLPEmbedder
from .flow import ConditionalFlow, Flow, standard_normal_log_prob
from .graph import InvertibleProgram, ModuleNode, Node, run_program
from .image import CheckerboardCoupling, ConvSubnet, GlowStep, OneHot, ZeroConv2d, bits_per_dim, dequantize
from .invconv import InvConv1x1
from .multiscale import AffinePrior, LearnedPrior, MultiScaleFlow, Split
from .permute import Permute, Reverse, Shuffle
from .squeeze import Squeeze, channel_mask, checkerboard_mask
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
    "standard_normal_log_prob",
    "build_flow",
    "collect_check_errors",
    "detect_overflow",
    "Squeeze",
    "checkerboard_mask",
    "channel_mask",
    "ConvSubnet",
    "ZeroConv2d",
    "GlowStep",
    "CheckerboardCoupling",
    "OneHot",
    "dequantize",
    "bits_per_dim",
    "Split",
    "AffinePrior",
    "LearnedPrior",
    "MultiScaleFlow",
    "build_glow",
    "build_realnvp",
    "InvertibleProgram",
    "Node",
    "ModuleNode",
    "run_program",
]
