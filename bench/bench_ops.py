"""Benchmarks of the fused coupling op on CPU: flowkern cpu vs reference eager vs torch.compile(reference).

Every implementation gets s_raw, t as the halves of one subnet output h; flowkern cpu takes h
whole (``coupling_forward_packed``, as the layers call it), "cpu views" passes the two views.

pytest-benchmark cases (``pytest bench/bench_ops.py``) and :func:`table` (used by bench/report.py),
which also prints the floor = max(bytes moved / copy bandwidth, transcendentals / exp throughput),
both throughputs measured on the pass's own bytes / element count.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Callable

import pytest
import torch

import flowkern

__all__ = ["SHAPES", "IMPLS", "make_inputs", "make_fns", "pass_work", "floor_fns", "table"]

SHAPES = [(65536, 256), (256, 64), (64, 64, 32, 32)]
PASSES = ("forward", "inverse", "forward+backward")


def make_inputs(shape: tuple[int, ...], requires_grad: bool = False, seed: int = 0):
    """x, halves (s_raw, t) of one subnet output h, actnorm a, b; float32, split at C/2."""
    g = torch.Generator().manual_seed(seed)
    B, C = shape[:2]
    x = torch.randn(shape, generator=g)
    h = torch.randn((B, C, *shape[2:]), generator=g)
    a = 0.5 + torch.rand(C, generator=g)
    b = 0.1 * torch.randn(C, generator=g)
    for v in (x, h, a, b):
        v.requires_grad_(requires_grad)
    return x, h, a, b


def _op(inverse: bool, backend: str, packed: bool):
    def f(x, h, a, b):
        if packed:
            op = flowkern.ops.coupling_inverse_packed if inverse else flowkern.ops.coupling_forward_packed
            return op(x, h, a, b, split=x.shape[1] // 2, scale="tanh", backend=backend)
        c = h.shape[1] // 2
        op = flowkern.ops.coupling_inverse if inverse else flowkern.ops.coupling_forward
        return op(x, h[:, :c], h[:, c:], a, b, split=x.shape[1] // 2, scale="tanh", backend=backend)
    return f


IMPLS = ("cpu", "cpu_views", "reference", "compiled")
# one compiled graph per (pass, shape, grad mode) of the shared function above
torch._dynamo.config.recompile_limit = 64


def make_fns(shape: tuple[int, ...], impl: str) -> dict[str, Callable[[], object]]:
    """Zero-argument callables per pass; impl in :data:`IMPLS`."""
    backend = "cpu" if impl.startswith("cpu") else "reference"
    fwd, inv = _op(False, backend, impl == "cpu"), _op(True, backend, impl == "cpu")
    if impl == "compiled":
        fwd, inv = torch.compile(fwd, fullgraph=True), torch.compile(inv, fullgraph=True)
    x, h, a, b = make_inputs(shape)
    xg, hg, ag, bg = make_inputs(shape, requires_grad=True)
    gy, gl = torch.randn(shape), torch.randn(shape[0])

    def forward_backward():
        y, ld = fwd(xg, hg, ag, bg)
        return torch.autograd.grad((y, ld), (xg, hg, ag, bg), (gy, gl))

    return {"forward": lambda: fwd(x, h, a, b), "inverse": lambda: inv(x, h, a, b),
            "forward+backward": forward_backward}


def _time_ms(fn: Callable[[], object], reps: int, warmup: int = 3) -> float:
    """Median wall time of one call, after ``warmup`` calls."""
    return _time_many({"fn": fn}, reps, warmup)["fn"]


def _time_many(fns: dict[str, Callable[[], object]], reps: int, warmup: int = 3,
               block_s: float = 0.0) -> dict[str, float]:
    """Median ms per call of each fn over ``reps`` rounds; each round runs every fn in turn, so
    load changes on a shared machine hit every implementation alike, in a fresh (seeded) random
    order each round: a call after unrelated code meets colder caches than one after its own
    kind, so a fixed order would favour whichever implementation follows a similar one.
    ``block_s`` > 0: a fn faster than that runs back to back for about ``block_s`` per round and
    the block's mean is the round's sample (warm, timeit-like); 0: one call per fn per round
    (each call follows the others' code, as an op in a model follows other ops)."""
    blocks = {}
    for k, fn in fns.items():
        for _ in range(warmup):
            fn()
        t0 = time.perf_counter()
        fn()
        blocks[k] = max(1, min(200, int(block_s / max(time.perf_counter() - t0, 1e-7))))
    ts: dict[str, list[float]] = {k: [] for k in fns}
    order, rng = list(fns), random.Random(0)
    for _ in range(reps):
        rng.shuffle(order)
        for k in order:
            fn, n = fns[k], blocks[k]
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            ts[k].append((time.perf_counter() - t0) / n)
    return {k: 1e3 * statistics.median(v) for k, v in ts.items()}


def pass_work(shape: tuple[int, ...], which: str) -> tuple[int, int]:
    """(bytes moved, transcendental evaluations) of one pass, float32, tanh.

    forward / inverse: read x, s_raw, t, write y (4 + 4 + 4 + 4 bytes per active element, 4 + 4 per
    passive), tanh + exp per active element. forward+backward adds reading grad_y, x, s_raw and writing
    grad_x, grad_s_raw, grad_t, and tanh + exp again.
    """
    n = math.prod(shape)
    act = n // 2
    fwd_bytes, fwd_tr = 4 * (2 * n + 2 * act), 2 * act
    if which == "forward+backward":
        return fwd_bytes + 4 * (2 * n + act + n + 2 * act), 2 * fwd_tr
    return fwd_bytes, fwd_tr


def floor_fns(shape: tuple[int, ...], which: str) -> dict[str, Callable[[], object]]:
    """The two halves of the floor of one pass, as callables: a copy moving the pass's bytes
    and torch.exp on as many elements as its tanh + exp evaluations. Timed beside the implementations
    (same rounds), floor = max of the two: what PyTorch reaches at that size, per-call cost included."""
    nbytes, tr = pass_work(shape, which)
    src = torch.randn(nbytes // 8)  # a copy of it reads nbytes / 2 and writes nbytes / 2
    dst = torch.empty_like(src)
    e_src = torch.randn(tr)
    e_dst = torch.empty_like(e_src)
    return {"floor_copy": lambda: dst.copy_(src), "floor_exp": lambda: torch.exp(e_src, out=e_dst)}


def table(quick: bool = False) -> str:
    """Markdown table: time per pass of each implementation, the floor and the ratios."""
    reps = 5 if quick else 20
    shapes = SHAPES[1:] if quick else SHAPES
    lines = [f"CPU, {torch.get_num_threads()} threads, float32, tanh, actnorm on, split C/2. Floor per pass: "
             "max(copy of the bytes it moves, torch.exp on as many elements as its tanh + exp evaluations), "
             "both timed at that size.", "",
             "| shape | pass | flowkern cpu ms | cpu, views ms | reference ms | compiled ref ms | floor ms "
             "(copy / exp) | compiled / cpu | cpu / floor |",
             "|---|---|---|---|---|---|---|---|---|"]
    for shape in shapes:
        fns = {impl: make_fns(shape, impl) for impl in IMPLS}
        for which in PASSES:
            n_reps = reps if math.prod(shape) >= 1 << 20 else 25 * reps  # small: noisy, cheap
            t = _time_many({**{impl: fns[impl][which] for impl in fns}, **floor_fns(shape, which)}, n_reps)
            fl_copy, fl_exp = t["floor_copy"], t["floor_exp"]
            fl = max(fl_copy, fl_exp)
            lines.append(f"| {tuple(shape)} | {which} | {t['cpu']:.3f} | {t['cpu_views']:.3f} | {t['reference']:.3f} | "
                         f"{t['compiled']:.3f} | {fl:.3f} ({fl_copy:.3f} / {fl_exp:.3f}) | "
                         f"{t['compiled'] / t['cpu']:.2f}x | {t['cpu'] / fl:.2f}x |")
    small = SHAPES[1]
    fns = {impl: make_fns(small, impl) for impl in ("cpu", "compiled")}
    warm = {which: _time_many({**{impl: fns[impl][which] for impl in fns}, **floor_fns(small, which)}, 25 * reps,
                              block_s=1e-3) for which in PASSES}
    lines += ["", f"The same {small} rows timed in warm blocks of ~1 ms per implementation (timeit-like) instead of "
              "one call each per round: " + "; ".join(
                  f"{which} compiled / cpu {t['compiled'] / t['cpu']:.2f}x, cpu / floor "
                  f"{t['cpu'] / max(t['floor_copy'], t['floor_exp']):.2f}x ({1e3 * t['cpu']:.0f} us)"
                  for which, t in warm.items()) + "."]
    tiny = make_fns((1, 64), "cpu")
    call = {k: _time_ms(tiny[k], 20 * reps, warmup=50) for k in PASSES}  # each in its own loop (timeit-like)
    lines += ["", "Per-call overhead (flowkern cpu at shape (1, 64), i.e. no work): "
              + ", ".join(f"{k} {1e3 * v:.1f} us" for k, v in call.items()) + "."]
    return "\n".join(lines)


# ---- pytest-benchmark cases ------------------------------------------------------
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("which", PASSES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_coupling_op(benchmark, shape, which, impl):
    if impl.startswith("cpu") and flowkern.backends.available("cpu")["cpu"] is not None:
        pytest.skip("C++ CPU extension not built")
    fn = make_fns(shape, impl)[which]
    benchmark.group = f"{which} {shape}"
    benchmark(fn)


if __name__ == "__main__":
    print(table(quick=False))
