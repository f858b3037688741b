"""Host cost of one fused coupling call: what the op costs where the kernel's work is ~0.

On a GPU a Glow block's coupling takes microseconds, so the Python / dispatcher / autograd work
around the kernel decides the step. Here the tensors are tiny (B=1, C=12, 4x4: work ~ 0) and the
process runs on one thread, so the times are host cost. Three ways to compute actnorm + affine
coupling (tanh scale) + log-det, timed in the same rounds:

* ``flowkern``: one ``flowkern.ops.coupling_forward_packed`` call (the compiled op);
* ``eager chain``: the ~11 torch ops a plain-PyTorch flow (normflows' ActNorm + AffineCoupling)
  runs for the same result;
* ``one-op floor``: one ``torch.mul`` — the least any op-based implementation pays.

Each is timed without grad and with autograd (forward + ``backward()`` of ``y.sum() + logdet.sum()``;
the floor's loss is ``y.sum()``). The ratios of interest are taken *above the floor*:
(impl - floor) / (chain - floor) with grad, impl / floor without grad.

Second table (:func:`glow_table`): a whole model where the host decides, normflows' notebook Glow
(``examples/image/notebook_glow.py``: 32 x 32, L = 3, K = 8, hidden 64, 10 classes) and its
``flowkern.compat.convert``, ``log_prob`` of one image without grad, timed as the first table in
one process on one thread (median ms per call).
"""

from __future__ import annotations

import argparse
import copy
import math
import random
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

import flowkern

__all__ = ["SHAPE", "make_fns", "measure", "table", "glow_table"]

SHAPE = (1, 12, 4, 4)
SPLIT, CLAMP = 6, 2.0


def _inputs(requires_grad: bool, device: str, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """x (B, C, H, W), the subnet output h = [s_raw | t] (B, C, H, W), actnorm a, b (C,)."""
    g = torch.Generator().manual_seed(seed)
    B, C = SHAPE[:2]
    x, h = torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g)
    a, b = 0.5 + torch.rand(C, generator=g), 0.1 * torch.randn(C, generator=g)
    return tuple(v.to(device).requires_grad_(requires_grad) for v in (x, h, a, b))


def flowkern_op(x, h, a, b):
    return flowkern.ops.coupling_forward_packed(x, h, a, b, split=SPLIT, scale="tanh", clamp=CLAMP)


def eager_chain(x, h, a, b):
    """actnorm + affine coupling + log-det as separate torch ops (normflows' way)."""
    z = x * a.view(1, -1, 1, 1) + b.view(1, -1, 1, 1)
    ld_an = math.prod(x.shape[2:]) * torch.log(torch.abs(a)).sum()
    z_p, z_a = z[:, :SPLIT], z[:, SPLIT:]
    s = CLAMP * torch.tanh(h[:, :SPLIT] / CLAMP)
    y_a = z_a * torch.exp(s) + h[:, SPLIT:]
    return torch.cat([z_p, y_a], 1), s.sum(dim=(1, 2, 3)) + ld_an


def one_op(x, h, a, b):
    return x * h, None


IMPLS: dict[str, Callable] = {"flowkern": flowkern_op, "eager chain": eager_chain, "one-op floor": one_op}


def make_fns(device: str = "cpu") -> dict[str, Callable[[], object]]:
    """``"<impl> no grad"`` and ``"<impl> grad"`` zero-argument callables per implementation."""
    plain, grad = _inputs(False, device), _inputs(True, device)
    fns = {}
    for name, fn in IMPLS.items():
        def no_grad(fn=fn):
            with torch.no_grad():
                return fn(*plain)

        def with_grad(fn=fn):
            y, ld = fn(*grad)
            loss = y.sum() if ld is None else y.sum() + ld.sum()
            loss.backward()

        fns[f"{name} no grad"], fns[f"{name} grad"] = no_grad, with_grad
    return fns


def measure(rounds: int = 200, block: int = 20, seed: int = 0, device: str = "cpu") -> dict[str, float]:
    """Median µs per call of each of :func:`make_fns`' fns (:func:`time_fns`). On CUDA each block
    ends with a synchronize, so the queue never fills: the time is the host's, as long as it
    exceeds the GPU's."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    return time_fns(make_fns(device), rounds, block, seed, sync)


def time_fns(fns: dict[str, Callable[[], object]], rounds: int, block: int, seed: int = 0,
             sync: Callable[[], object] = lambda: None, warmup: int = 50) -> dict[str, float]:
    """Median µs per call of each fn after ``warmup`` calls; each round runs a block of ``block``
    calls of every fn, in a fresh seeded random order (load changes hit all alike)."""
    for fn in fns.values():  # warm-up: first calls load kernels, build autograd graphs
        for _ in range(warmup):
            fn()
    ts: dict[str, list[float]] = {k: [] for k in fns}
    order, rng = list(fns), random.Random(seed)
    for _ in range(rounds):
        rng.shuffle(order)
        for k in order:
            fn = fns[k]
            t0 = time.perf_counter()
            for _ in range(block):
                fn()
            sync()
            ts[k].append((time.perf_counter() - t0) / block)
    return {k: 1e6 * statistics.median(v) for k, v in ts.items()}


def table(quick: bool = False, device: str = "cpu") -> str:
    """Markdown table of the host cost per call and the ratios above the floor."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t = measure(rounds=60 if quick else 300, device=device)
    finally:
        torch.set_num_threads(threads)
    backend = flowkern.backends.select(torch.device(device)).name
    where = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    floor_g, floor_n = t["one-op floor grad"], t["one-op floor no grad"]
    lines = [f"{where}, 1 host thread, float32, shape {SHAPE} (work ~ 0), flowkern backend `{backend}`. Median µs "
             "per call; with grad = forward + `backward()`.", "",
             "| implementation | no grad µs | with grad µs | with grad above floor µs |",
             "|---|---|---|---|"]
    for name in IMPLS:
        n, g = t[f"{name} no grad"], t[f"{name} grad"]
        lines.append(f"| {name} | {n:.1f} | {g:.1f} | {g - floor_g:.1f} |")
    above_op, above_chain = t["flowkern grad"] - floor_g, t["eager chain grad"] - floor_g
    lines += ["", f"With grad, above the floor: flowkern / eager chain = {above_op / above_chain:.2f} "
              "("
              f"{above_op:.1f} / {above_chain:.1f} µs). Without grad: flowkern / one-op floor = {t['flowkern no grad'] / floor_n:.2f}."]
    return "\n".join(lines)


def glow_table(quick: bool = False, batch: int = 1) -> str:
    """Markdown: normflows' notebook Glow and its conversion, ``log_prob`` without grad (module docstring)."""
    sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "examples" / "image"))
    from notebook_glow import notebook_glow

    from flowkern.compat import convert

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # normflows' own deprecation warnings
            peer = notebook_glow(32)
        g = torch.Generator().manual_seed(1)
        x, y = torch.rand(batch, 3, 32, 32, generator=g), torch.randint(0, 10, (batch,), generator=g)
        with torch.no_grad():
            peer.log_prob(x, y)  # the actnorms' data-dependent init
        models = {"normflows": peer, "flowkern": convert(copy.deepcopy(peer))}
        rounds = 60 if quick else 400
        with torch.no_grad():
            us = time_fns({k: (lambda m=m: m.log_prob(x, y)) for k, m in models.items()}, rounds, block=1, warmup=5)
    finally:
        torch.set_num_threads(threads)
    med = {k: v / 1e3 for k, v in us.items()}
    return "\n".join([
        f"normflows' notebook Glow 32x32 (L=3, K=8, hidden 64) and its `flowkern.compat.convert`: `log_prob` of "
        f"{batch} image{'s' * (batch != 1)}, no grad, CPU float32, 1 host thread, {rounds} calls each, in a fresh "
        "random order per round. Median ms per call.", "",
        "| model | ms per call |", "|---|---|",
        *[f"| {k} | {v:.2f} |" for k, v in med.items()], "",
        f"flowkern / normflows = {med['flowkern'] / med['normflows']:.3f}."])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer rounds")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the tensors live")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("skipped: no CUDA GPU is visible")
        return 0
    print(table(quick=args.quick, device=args.device))
    if args.device == "cpu":
        print()
        print(glow_table(quick=args.quick))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
