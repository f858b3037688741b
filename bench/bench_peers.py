"""Peer models vs their flowkern conversion: training-step time and bytes saved for backward.

For a FrEIA ``SequenceINN``, a normflows ``NormalizingFlow`` and an nflows ``Flow``
(``CompositeTransform``), each converted with :func:`flowkern.compat.convert`, one run
measures the median time of a step (negative log-likelihood forward + backward) and the
bytes of the tensors autograd saves for backward (:func:`flowkern.check.saved_bytes`: each
storage once, whole).

    python bench/bench_peers.py [--quick]          # markdown table
    pytest bench/bench_peers.py --benchmark-only   # pytest-benchmark cases
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from flowkern.check import saved_bytes
from flowkern.compat import convert

__all__ = ["table", "MODELS"]


def _mlp(c_in: int, c_out: int, hidden: int = 128) -> nn.Module:
    return nn.Sequential(nn.Linear(c_in, hidden), nn.ReLU(), nn.Linear(hidden, c_out))


class _ContextFree(nn.Module):
    """nflows calls ``transform_net(x, context)``; this MLP ignores the context."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.net = _mlp(c_in, c_out)

    def forward(self, x: torch.Tensor, context=None) -> torch.Tensor:
        return self.net(x)


def _conv(c_in: int, c_out: int, hidden: int = 32) -> nn.Module:
    return nn.Sequential(nn.Conv2d(c_in, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, c_out, 1))


def _gauss_nll(z: torch.Tensor, log_jac: torch.Tensor) -> torch.Tensor:
    return (0.5 * z.flatten(1).pow(2).sum(1) - log_jac).mean()


def freia_model(quick: bool):
    """SequenceINN of 8 blocks (ActNorm, GLOW, AllInOne, permutations) on 16x8x8 images."""
    import FrEIA.framework as Ff
    import FrEIA.modules as Fm

    np.random.seed(0)
    torch.manual_seed(0)
    shape = (16, 8, 8)
    inn = Ff.SequenceINN(*shape)
    for i in range(8):
        if i % 2 == 0:
            inn.append(Fm.ActNorm)
            inn.append(Fm.GLOWCouplingBlock, subnet_constructor=_conv)
        else:
            inn.append(Fm.AllInOneBlock, subnet_constructor=_conv)
    x = torch.randn(16 if quick else 64, *shape)

    def loss(model):
        return _gauss_nll(*model(x))

    return inn, loss


def normflows_model(quick: bool):
    """Glow-style NormalizingFlow: 8 x (ActNorm, AffineCouplingBlock, Permute) on 64-d vectors."""
    import normflows as nf

    torch.manual_seed(0)
    dim = 64
    flows = []
    for _ in range(8):
        flows += [nf.flows.ActNorm(dim), nf.flows.AffineCouplingBlock(_mlp(dim // 2, dim), True, "sigmoid"),
                  nf.flows.Permute(dim)]
    model = nf.NormalizingFlow(nf.distributions.DiagGaussian(dim, trainable=False), flows)
    x = torch.randn(64 if quick else 512, dim)

    def loss(m):
        return -m.log_prob(x).mean()

    return model, loss


def nflows_model(quick: bool):
    """nflows Flow: 8 x (ActNorm, AffineCouplingTransform (alternating mask), RandomPermutation)."""
    from nflows.distributions.normal import StandardNormal
    from nflows.flows.base import Flow
    from nflows.transforms.base import CompositeTransform
    from nflows.transforms.coupling import AffineCouplingTransform
    from nflows.transforms.normalization import ActNorm
    from nflows.transforms.permutations import RandomPermutation

    torch.manual_seed(0)
    dim = 64
    ts = []
    for i in range(8):
        mask = [(j + i) % 2 for j in range(dim)]
        ts += [ActNorm(dim), AffineCouplingTransform(mask, _ContextFree), RandomPermutation(dim)]
    model = Flow(CompositeTransform(ts), StandardNormal([dim]))
    x = torch.randn(64 if quick else 512, dim)

    def loss(m):
        return -m.log_prob(x).mean()

    return model, loss


MODELS: dict[str, Callable] = {"FrEIA SequenceINN": freia_model, "normflows NormalizingFlow": normflows_model,
                               "nflows Flow": nflows_model}


def step_time(model: nn.Module, loss: Callable, reps: int) -> float:
    """Median seconds of one forward + backward."""
    times = []
    for _ in range(reps + 1):
        model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        loss(model).backward()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def prepare(name: str, quick: bool):
    """(peer, flowkern conversion, loss) with ActNorms initialised on the data."""
    peer, loss = MODELS[name](quick)
    with torch.no_grad():
        loss(peer)
    return peer, convert(peer), loss


def table(quick: bool) -> str:
    """Markdown table: per peer model, step time and saved-for-backward bytes, peer vs flowkern."""
    torch.manual_seed(0)
    reps = 3 if quick else 10
    rows = ["| model | peer step (ms) | flowkern step (ms) | speed-up | peer saved (MiB) | flowkern saved (MiB) "
            "| saved ratio | max abs loss diff |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name in MODELS:
        peer, ours, loss = prepare(name, quick)
        diff = abs(loss(peer).item() - loss(ours).item())
        tp, to = step_time(peer, loss, reps), step_time(ours, loss, reps)
        bp = saved_bytes(lambda: loss(peer))
        bo = saved_bytes(lambda: loss(ours))
        rows.append(f"| {name} | {1e3 * tp:.2f} | {1e3 * to:.2f} | {tp / to:.2f}x | {bp / 2**20:.2f} | "
                    f"{bo / 2**20:.2f} | {bo / bp:.2f} | {diff:.1e} |")
    return "\n".join(rows)


def _bench_case(benchmark, name: str, flowkern_side: bool) -> None:
    peer, ours, loss = prepare(name, quick=True)
    model = ours if flowkern_side else peer
    benchmark(lambda: loss(model).backward())
    assert math.isfinite(loss(model).item())


def test_freia_peer(benchmark):
    _bench_case(benchmark, "FrEIA SequenceINN", False)


def test_freia_flowkern(benchmark):
    _bench_case(benchmark, "FrEIA SequenceINN", True)


def test_normflows_peer(benchmark):
    _bench_case(benchmark, "normflows NormalizingFlow", False)


def test_normflows_flowkern(benchmark):
    _bench_case(benchmark, "normflows NormalizingFlow", True)


def test_nflows_peer(benchmark):
    _bench_case(benchmark, "nflows Flow", False)


def test_nflows_flowkern(benchmark):
    _bench_case(benchmark, "nflows Flow", True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small batches, few repetitions")
    print(table(parser.parse_args().quick))
