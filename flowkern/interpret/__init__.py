"""Interpreting representations with INNs: IIN factors (incl. sketch-defined concepts) and invariances.

Built on :mod:`flowkern.nn` and :mod:`flowkern.training` only (not on :mod:`flowkern.translate`)."""

from .iin import (FactorLoss, FactorTransformer, PairFn, estimate_factor_sizes, fit_iin, pair_correlation_scores,
                  sketch_pairs)
from .invariances import sample_invariances

__all__ = ["FactorTransformer", "FactorLoss", "PairFn", "estimate_factor_sizes", "fit_iin",
           "pair_correlation_scores", "sketch_pairs", "sample_invariances"]
