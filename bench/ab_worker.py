"""Time one training step in this process, for ``bench/ab.py``: one workload, one mode, trained
alone, printed as one JSON line.

    PYTHONPATH=<flowkern tree> python bench/ab_worker.py --model iin --mode standard [--quick]

``bench/ab.py`` runs this same file against every tree it compares (``PYTHONPATH`` picks the
tree), so it uses only long-standing API. Vector flows (``iin``, ``compvis``, ``cinn``: the
configs of ``bench_flows.CONFIGS`` / ``QUICK``): ``ActNorm``, ``DoubleAffineCoupling``,
``Shuffle``, ``Flow`` / ``ConditionalFlow`` and ``nll_loss``; the scale function's keyword
(``scale_fn=`` in older trees, ``scale=`` now) is found from the signature. One step:
``zero_grad(set_to_none=True)``, ``flow.nll_loss(x, c).backward()``,
``torch.optim.Adam(fused=True).step()``; batch and seeds as ``bench_flows``. Image flows
(``glow32``, ``glow128``: ``image_worker.CONFIGS`` / ``QUICK``): normflows' notebook Glow converted
with ``flowkern.compat.convert(model, memory_saving=...)``, one ``forward_kld`` step with Adam, as
``bench_image``. Reported: every timed step's seconds, their median and the median of minor page
faults per step (``getrusage``).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import sys
import time

import torch

from bench_flows import CONFIGS, QUICK, minor_faults

VECTOR = ("iin", "compvis", "cinn")  # bench_flows.CONFIGS / QUICK in this order
IMAGE = ("glow32", "glow128")  # image_worker: the notebook Glow at 32x32 and the 128x128 configuration
MODELS = VECTOR + IMAGE
MODES = ("standard", "memory-saving")
SCALE = "tanh"
CLAMP = 2.0


def config(model: str, quick: bool):
    if model in IMAGE:
        import image_worker

        return image_worker.QUICK[IMAGE.index(model)] if quick else \
            {"glow32": image_worker.CONFIGS[0], "glow128": image_worker.LARGE}[model]
    return (QUICK if quick else CONFIGS)[VECTOR.index(model)]


def _coupling_kwargs(cls, cfg) -> dict:
    """Keyword arguments for ``DoubleAffineCoupling`` that this tree's signature accepts, with the
    scale function under whichever name it has; a missing one is an error, not a silent default."""
    params = inspect.signature(cls).parameters
    kw = dict(cond_channels=cfg.cond_dim, separate_nets=cfg.separate_nets, clamp=CLAMP)
    scale_name = next((n for n in ("scale", "scale_fn") if n in params), None)
    missing = [k for k in kw if k not in params] + ([] if scale_name else ["scale / scale_fn"])
    if missing:
        raise SystemExit(f"ab_worker: DoubleAffineCoupling{inspect.signature(cls)} lacks {missing}")
    kw[scale_name] = SCALE
    return kw


def build(cfg, memory_saving: bool):
    """``cfg.n_blocks`` x [ActNorm, DoubleAffineCoupling, Shuffle(seed=i)], as bench_flows builds it."""
    from flowkern.nn import ActNorm, ConditionalFlow, DoubleAffineCoupling, Flow, Shuffle

    kw = _coupling_kwargs(DoubleAffineCoupling, cfg)
    torch.manual_seed(0)
    blocks = []
    for i in range(cfg.n_blocks):
        blocks += [ActNorm(cfg.dim), DoubleAffineCoupling(cfg.dim, cfg.hidden, cfg.depth, **kw),
                   Shuffle(cfg.dim, seed=i)]
    return (ConditionalFlow if cfg.cond_dim else Flow)(blocks, memory_saving=memory_saving)


def _batch(cfg):
    torch.manual_seed(0)
    x = torch.randn(cfg.batch, cfg.dim)
    return x, torch.randn(cfg.batch, cfg.cond_dim) if cfg.cond_dim else None


def _backend() -> str:
    """The op backend flowkern picks for CPU tensors in this tree ('?' if it cannot say)."""
    try:
        import flowkern

        return flowkern.backends.select(torch.device("cpu")).name
    except Exception:  # an API this script does not know: report, don't guess
        return "?"


def _step_fn(model: str, mode: str, cfg):
    """The workload's model, optimizer and loss closure."""
    if model in IMAGE:
        import image_worker

        impl = "flowkern-ms" if mode == "memory-saving" else "flowkern"
        models, x, y = image_worker.build_models(cfg, [impl])
        net = models[impl]
        return torch.optim.Adam(net.parameters(), lr=1e-5), lambda: net.forward_kld(x, y)
    flow = build(cfg, mode == "memory-saving")
    x, c = _batch(cfg)
    return torch.optim.Adam(flow.parameters(), lr=1e-5, fused=True), lambda: flow.nll_loss(x, c)


def run(model: str, mode: str, steps: int, warmup: int, quick: bool) -> dict:
    import flowkern

    cfg = config(model, quick)
    opt, loss_fn = _step_fn(model, mode, cfg)
    times, faults = [], []
    for i in range(warmup + steps):  # warm-up: ActNorm's data-dependent init, the allocator
        f0, t0 = minor_faults(), time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_fn().backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
            faults.append(minor_faults() - f0)
    return dict(model=model, mode=mode, config=cfg.name, steps_s=times, median_s=statistics.median(times),
                faults=int(statistics.median(faults)), flowkern=os.path.dirname(os.path.abspath(flowkern.__file__)),
                backend=_backend(), torch=torch.__version__, threads=torch.get_num_threads(),
                malloc_env={k: v for k, v in os.environ.items() if k.startswith("MALLOC_") or k == "GLIBC_TUNABLES"})


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=MODELS, required=True)
    p.add_argument("--mode", choices=MODES, required=True)
    p.add_argument("--steps", type=int, default=6, help="timed steps (default 6)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    p.add_argument("--quick", action="store_true", help="the QUICK configs (bench_flows, image_worker)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(json.dumps(run(args.model, args.mode, args.steps, args.warmup, args.quick)))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
