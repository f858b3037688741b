"""Interpreting representations with INNs: IIN factors (incl. sketch-defined concepts) and invariances."""

from .iin import (FactorLoss, FactorTransformer, PairFn, estimate_factor_sizes, fit_iin, pair_correlation_scores,
                  sketch_pairs)
from .invariances import InvarianceExplainer

__all__ = ["FactorTransformer", "FactorLoss", "PairFn", "estimate_factor_sizes", "fit_iin",
           "pair_correlation_scores", "sketch_pairs", "InvarianceExplainer"]
