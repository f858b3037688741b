r"""IIN: a disentangling invertible interpretation network (Esser, Rombach, Ommer, CVPR 2020).

A flow :math:`T` maps an expert representation :math:`z` to :math:`\tilde z = T(z)`, split into
semantic factors :math:`\tilde z = (\tilde z^1, \dots, \tilde z^K, \tilde z^{res})`. For a pair
:math:`(x^a, x^b)` sharing factor :math:`F`, the parts :math:`\tilde z^F_a, \tilde z^F_b` are jointly
Gaussian with correlation :math:`\rho`; all other factors and the residual are independent N(0, I):

.. math:: -\log p(\tilde z_b \mid \tilde z_a) \doteq
          \frac{\|\tilde z_b^F - \rho\,\tilde z_a^F\|^2}{2(1-\rho^2)} + \frac{N_F}{2}\log(1-\rho^2)
          + \sum_{k \ne F} \tfrac12\|\tilde z_b^k\|^2

and the training loss is :math:`\tfrac12\|\tilde z_a\|^2 - \log|\det J_T(z_a)|
- \log p(\tilde z_b\mid\tilde z_a) - \log|\det J_T(z_b)|` (CompVis convention: no 2π constants).
Pairs that share no factor (index -1) give the unsupervised IIN (plain NLL of both samples).

Factor sizes are estimated from pair correlations:
:math:`s_F = \sum_i \operatorname{Corr}(z_{a,i}, z_{b,i})`, :math:`N_F = \lfloor
\operatorname{softmax}(s)_F\, D\rfloor`; the residual (score ``residual_score``) takes the remainder.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
from torch import nn

from .._checks import check_choice, check_int, check_number
from ..nn import build_flow
from ..training import train_steps

__all__ = ["FactorTransformer", "FactorLoss", "PairFn", "estimate_factor_sizes", "fit_iin",
           "pair_correlation_scores", "sketch_pairs"]

# A pair source: generator -> (z_a (B, D), z_b (B, D), shared (B,) factor index or -1).
PairFn = Callable[[torch.Generator], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]

RESIDUAL = "residual"


def _sizes(dim: int, factor_sizes: Mapping[str, int]) -> dict[str, int]:
    if not isinstance(factor_sizes, Mapping) or not factor_sizes:
        raise TypeError("factor_sizes must be a non-empty mapping name -> size")
    for name, n in factor_sizes.items():
        if name == RESIDUAL:
            raise ValueError(f"factor_sizes must not name {RESIDUAL!r}: it takes the remaining dimensions")
        check_int(f"factor_sizes[{name!r}]", n, minimum=1)
    rest = dim - sum(factor_sizes.values())
    if rest < 0:
        raise ValueError(f"factor_sizes sum to {sum(factor_sizes.values())} > dim={dim}")
    return {**factor_sizes, RESIDUAL: rest}


class FactorTransformer(nn.Module):
    """Flow ``T`` over (B, dim) representations whose output is split into named factors + residual.

    ``factor_sizes`` maps factor names (in order) to sizes; the residual takes the rest of ``dim``.
    The flow is :func:`flowkern.nn.build_flow` (ActNorm + DoubleAffineCoupling + Shuffle blocks).
    """

    def __init__(self, dim: int, factor_sizes: Mapping[str, int], *, n_blocks: int = 4, hidden: int = 128,
                 depth: int = 2, clamp: float = 2.0) -> None:
        super().__init__()
        self.dim = dim
        self.sizes = _sizes(dim, factor_sizes)
        self.names = tuple(self.sizes)
        starts = [0]
        for n in self.sizes.values():
            starts.append(starts[-1] + n)
        self.slices = {k: slice(starts[i], starts[i + 1]) for i, k in enumerate(self.names)}
        self.flow = build_flow(dim, n_blocks, hidden, depth, clamp=clamp)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(T(z), log|det dT/dz|)."""
        return self.flow(z)

    def encode(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Factors of T(z): name -> (B, N_name) (views of one tensor)."""
        u = self.flow(z)[0]
        return {k: u[:, s] for k, s in self.slices.items()}

    def decode(self, factors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """T^{-1}(cat(factors)); every factor name must be given."""
        missing = [k for k in self.names if k not in factors]
        if missing:
            raise ValueError(f"factors is missing {missing}")
        return self.flow.inverse(torch.cat([factors[k] for k in self.names], 1))[0]

    def swap(self, z_a: torch.Tensor, z_b: torch.Tensor, factor: str) -> torch.Tensor:
        """Representation of a with factor ``factor`` taken from b: T^{-1}(T(z_a) with part F of T(z_b))."""
        check_choice("factor", factor, self.names)
        u = self.flow(z_a)[0].clone()
        u[:, self.slices[factor]] = self.flow(z_b)[0][:, self.slices[factor]]
        return self.flow.inverse(u)[0]

    def interpolate(self, z_a: torch.Tensor, z_b: torch.Tensor, factor: str, steps: int = 7) -> torch.Tensor:
        """(steps, B, dim): factor F moved linearly from a's to b's value, all other factors of a kept."""
        check_choice("factor", factor, self.names)
        steps = check_int("steps", steps, minimum=2)
        ua, ub = self.flow(z_a)[0], self.flow(z_b)[0]
        s = self.slices[factor]
        out = []
        for w in torch.linspace(0, 1, steps).tolist():
            u = ua.clone()
            u[:, s] = (1 - w) * ua[:, s] + w * ub[:, s]
            out.append(self.flow.inverse(u)[0])
        return torch.stack(out)


class FactorLoss(nn.Module):
    """IIN objective for pairs (module docstring); ``shared[i]`` is the index (into the factor names,
    residual excluded) of the factor pair i shares, or -1 for none (unsupervised NLL)."""

    def __init__(self, sizes: Mapping[str, int], rho: float = 0.975) -> None:
        super().__init__()
        if not 0.0 < rho < 1.0:
            raise ValueError(f"rho must be in (0, 1), got {rho!r}")
        if RESIDUAL not in sizes:
            raise ValueError(f"sizes must contain {RESIDUAL!r} (use FactorTransformer.sizes)")
        self.rho = float(rho)
        self.names = tuple(k for k in sizes if k != RESIDUAL)
        start, self.slices = 0, []
        for k, n in sizes.items():
            if k != RESIDUAL:
                self.slices.append(slice(start, start + n))
            start += n
        self.dim = start

    def forward(self, u_a: torch.Tensor, logdet_a: torch.Tensor, u_b: torch.Tensor, logdet_b: torch.Tensor,
                shared: torch.Tensor) -> torch.Tensor:
        """Mean over pairs of the negative log-likelihood of (u_a, u_b) minus both log-dets."""
        if u_a.shape != u_b.shape or u_a.dim() != 2 or u_a.shape[1] != self.dim:
            raise ValueError(f"u_a and u_b must both have shape (B, {self.dim}), got "
                             f"{tuple(u_a.shape)} and {tuple(u_b.shape)}")
        if shared.shape != (u_a.shape[0],) or shared.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"shared must be an integer tensor of shape ({u_a.shape[0]},)")
        if ((shared < -1) | (shared >= len(self.names))).any():
            raise ValueError(f"shared must be in [-1, {len(self.names) - 1}]")
        rho, one_m = self.rho, 1.0 - self.rho ** 2
        nll_b = 0.5 * u_b.pow(2).sum(1)
        for k, s in enumerate(self.slices):
            mask = shared == k
            cond = (u_b[:, s] - rho * u_a[:, s]).pow(2).sum(1) / (2 * one_m) \
                + 0.5 * (s.stop - s.start) * math.log(one_m)
            nll_b = nll_b + mask * (cond - 0.5 * u_b[:, s].pow(2).sum(1))
        nll_a = 0.5 * u_a.pow(2).sum(1)
        return (nll_a - logdet_a + nll_b - logdet_b).mean()


def pair_correlation_scores(pairs: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
    """s_F = sum_i Corr(z_a[:, i], z_b[:, i]) over the pairs (z_a, z_b) (N, D) sharing factor F."""
    scores = {}
    for name, (za, zb) in pairs.items():
        if za.shape != zb.shape or za.dim() != 2 or za.shape[0] < 3:
            raise ValueError(f"pairs[{name!r}] must be two (N >= 3, D) tensors of one shape")
        a = za.double() - za.double().mean(0)
        b = zb.double() - zb.double().mean(0)
        corr = (a * b).sum(0) / (a.pow(2).sum(0).sqrt() * b.pow(2).sum(0).sqrt()).clamp_min(1e-12)
        scores[name] = float(corr.sum())
    return scores


def estimate_factor_sizes(pairs: Mapping[str, tuple[torch.Tensor, torch.Tensor]], dim: int | None = None,
                          residual_score: float = 1.0) -> dict[str, int]:
    """N_F = floor(softmax([s_1..s_K, residual_score])_F * D) per factor; the residual gets the rest."""
    scores = pair_correlation_scores(pairs)
    dim = next(iter(pairs.values()))[0].shape[1] if dim is None else dim
    p = torch.softmax(torch.tensor([*scores.values(), residual_score], dtype=torch.float64), 0)
    sizes = {k: int(math.floor(float(p[i]) * dim)) for i, k in enumerate(scores)}
    sizes[RESIDUAL] = dim - sum(sizes.values())
    return sizes


def fit_iin(model: FactorTransformer, pair_fn: PairFn, steps: int, *, rho: float = 0.975, lr: float = 1e-3,
            noise: float = 0.0, seed: int = 0, progress: bool = False, desc: str = "iin") -> list[float]:
    """Minimise :class:`FactorLoss` over ``steps`` pair batches (Adam, cosine LR); returns the losses.

    ``noise`` > 0 adds N(0, noise^2) to every z_a and z_b: the flow then models a smoothed density and
    cannot spend its capacity on the near-degenerate directions of an autoencoder latent (without it
    the loss keeps falling while the factors generalise worse).
    """
    noise = check_number("noise", noise, minimum=0)
    loss_fn = FactorLoss(model.sizes, rho)

    def pair_loss(g: torch.Generator) -> torch.Tensor:
        z_a, z_b, shared = pair_fn(g)
        z = torch.cat([z_a, z_b])
        if noise:
            z = z + noise * torch.randn(z.shape, generator=g)
        u, logdet = model(z)
        n = z.shape[0] // 2
        return loss_fn(u[:n], logdet[:n], u[n:], logdet[n:], shared)

    return train_steps(model, pair_loss, steps, lr=lr, seed=seed, progress=progress, desc=desc)


def sketch_pairs(examples: torch.Tensor, n: int, nuisance: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pairs sharing a sketch-defined concept: ``examples`` (K >= 2, ...) differ only in the concept.

    Each pair picks one example k and applies two independent nuisance variations to it, so the pair
    shares exactly the concept value k (and nothing else the nuisance resamples).
    Returns (images_a, images_b, k).
    """
    if examples.dim() < 2 or examples.shape[0] < 2:
        raise ValueError(f"examples must hold >= 2 images (K, ...), got {tuple(examples.shape)}")
    k = torch.randint(examples.shape[0], (n,), generator=generator)
    return nuisance(examples[k], generator), nuisance(examples[k], generator), k
