"""One NLL training step (forward + backward + Adam step) of IIN-sized flat coupling flows:
flowkern (standard and memory-saving) beside FrEIA, normflows and nflows building the same
architecture, and beside the GEMM floor.

Architecture per block: ActNorm, a double affine coupling (two couplings, half swap),
a random channel permutation. Subnets: Linear(D/2, H), LeakyReLU, depth x
[Linear(H, H), LeakyReLU], Linear(H, D) producing [s | t] (FrEIA GLOWCouplingBlock),
or separate s and t nets (CompVis).

Every implementation steps with ``torch.optim.Adam(fused=True)`` (one pass over the 14-40 M
parameters; the default multi-tensor Adam makes several).

GEMM floor: every matmul of the step (forward, grad input, grad weight of each Linear) run
back to back with ``torch.mm(out=)``, timed in the same rounds as the steps — what a step
costs if everything but the GEMMs were free. "GEMM floor + Adam, bias-grad and LeakyReLU passes"
adds the memory-bound work every implementation here does besides its GEMMs (:func:`non_gemm_work`),
timed in the same rounds: a bound for any step built on ATen's GEMMs and kernels. Bytes saved for backward: tensors packed by autograd during
the forward+loss (:func:`flowkern.check.saved_bytes`: each saved storage once, whole).
Page faults: minor faults per step (``getrusage``), i.e. fresh pages the kernel zero-filled
because glibc gave the previous step's freed memory back. The heap is a process setting: the
table's caption names the ``MALLOC_*`` / ``GLIBC_TUNABLES`` / ``LD_PRELOAD`` variables the process
runs with (``make bench`` sets the ``MALLOC_*`` ones); ``bench/ab.py`` compares glibc's defaults
with them, each model trained alone in fresh processes.

Run ``python bench/bench_flows.py [--quick]`` for the markdown table, or
``pytest bench/bench_flows.py`` for the pytest-benchmark cases.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


__all__ = ["Config", "CONFIGS", "table"]


@dataclass(frozen=True)
class Config:
    name: str
    dim: int
    n_blocks: int
    hidden: int
    depth: int = 2
    cond_dim: int = 0
    batch: int = 256
    separate_nets: bool = False


CONFIGS = [
    Config("IIN (FrEIA GLOW subnets)", 64, 12, 512),
    Config("IIN, CompVis separate s/t nets", 64, 12, 512, separate_nets=True),
    Config("cINN (D=128, cond 128)", 128, 20, 1024, cond_dim=128),
]
QUICK = [
    Config("IIN (quick)", 16, 3, 64, batch=64),
    Config("IIN CompVis (quick)", 16, 3, 64, batch=64, separate_nets=True),
    Config("cINN (quick)", 32, 3, 128, cond_dim=16, batch=64),
]


def _mlp(n_in: int, n_out: int, hidden: int, depth: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(n_in, hidden), nn.LeakyReLU()]
    for _ in range(depth):
        layers += [nn.Linear(hidden, hidden), nn.LeakyReLU()]
    return nn.Sequential(*layers, nn.Linear(hidden, n_out))


class _ContextMLP(nn.Module):
    """nflows calls its transform nets as net(x, context)."""

    def __init__(self, n_in: int, n_out: int, hidden: int, depth: int) -> None:
        super().__init__()
        self.net = _mlp(n_in, n_out, hidden, depth)

    def forward(self, v: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(v)


# ---- models: each returns (modules, loss_fn(x, c)) -------------------------------
def make_flowkern(cfg: Config, memory_saving: bool):
    from flowkern.nn import ActNorm, ConditionalFlow, DoubleAffineCoupling, Flow, Shuffle

    blocks: list[nn.Module] = []
    for i in range(cfg.n_blocks):
        blocks += [ActNorm(cfg.dim),
                   DoubleAffineCoupling(cfg.dim, cfg.hidden, cfg.depth, cond_channels=cfg.cond_dim,
                                        separate_nets=cfg.separate_nets),
                   Shuffle(cfg.dim, seed=i)]
    cls = ConditionalFlow if cfg.cond_dim else Flow
    flow = cls(blocks, memory_saving=memory_saving)
    return flow, lambda x, c: flow.nll_loss(x, c)


def make_flowkern_compiled(cfg: Config):
    """flowkern standard mode under ``torch.compile(fullgraph=True)``; the first call (ActNorm's
    data-dependent init, a warm-up round) runs eagerly."""
    flow, loss = make_flowkern(cfg, False)
    compiled = torch.compile(loss, fullgraph=True)
    initialised = False

    def loss_fn(x, c):
        nonlocal initialised
        if initialised:
            return compiled(x, c)
        initialised = True
        return loss(x, c)

    return flow, loss_fn


def make_freia(cfg: Config):
    import FrEIA.framework as Ff
    import FrEIA.modules as Fm

    if cfg.separate_nets:
        return None
    inn = Ff.SequenceINN(cfg.dim)
    sub = lambda i, o: _mlp(i, o, cfg.hidden, cfg.depth)  # noqa: E731
    for i in range(cfg.n_blocks):
        inn.append(Fm.ActNorm)
        if cfg.cond_dim:
            inn.append(Fm.GLOWCouplingBlock, subnet_constructor=sub, clamp=2.0, cond=0, cond_shape=(cfg.cond_dim,))
        else:
            inn.append(Fm.GLOWCouplingBlock, subnet_constructor=sub, clamp=2.0)
        inn.append(Fm.PermuteRandom, seed=i)

    def loss(x, c):
        z, ld = inn(x, c=[c]) if c is not None else inn(x)
        return (0.5 * (z * z).sum(1) - ld).mean()

    return inn, loss


def make_normflows(cfg: Config):
    import normflows as nf

    if cfg.separate_nets or cfg.cond_dim:
        return None
    half = cfg.dim // 2
    flows = []
    for _ in range(cfg.n_blocks):
        flows.append(nf.flows.ActNorm((cfg.dim,)))
        for _ in range(2):
            flows.append(nf.flows.AffineCouplingBlock(_mlp(half, 2 * (cfg.dim - half), cfg.hidden, cfg.depth)))
            flows.append(nf.flows.Permute(cfg.dim, mode="swap"))
        flows.append(nf.flows.Permute(cfg.dim, mode="shuffle"))
    model = nf.NormalizingFlow(nf.distributions.DiagGaussian(cfg.dim, trainable=False), flows)
    return model, lambda x, c: model.forward_kld(x)


def make_nflows(cfg: Config):
    from nflows.distributions import StandardNormal
    from nflows.flows import Flow
    from nflows.transforms import ActNorm, AffineCouplingTransform, CompositeTransform, RandomPermutation

    if cfg.separate_nets or cfg.cond_dim:
        return None
    mask = torch.zeros(cfg.dim)
    mask[cfg.dim // 2:] = 1
    transforms = []
    for _ in range(cfg.n_blocks):
        transforms.append(ActNorm(cfg.dim))
        for m in (mask, 1 - mask):
            transforms.append(AffineCouplingTransform(m, lambda i, o: _ContextMLP(i, o, cfg.hidden, cfg.depth)))
        transforms.append(RandomPermutation(cfg.dim))
    flow = Flow(CompositeTransform(transforms), StandardNormal([cfg.dim]))
    return flow, lambda x, c: -flow.log_prob(x).mean()


# ---- measurement -----------------------------------------------------------------
def make_optimizer(model: nn.Module | list[torch.Tensor]) -> torch.optim.Optimizer:
    params = model.parameters() if isinstance(model, nn.Module) else model
    return torch.optim.Adam(params, lr=1e-5, fused=True)


def minor_faults() -> int:
    """Minor page faults of this process so far (``getrusage``): fresh pages the kernel zero-filled."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def step_times(models: dict[str, tuple[nn.Module, object]], x, c, reps: int,
               extra: dict[str, Callable[[], object]] | None = None) -> dict[str, tuple[float, float | None, int]]:
    """Per model, medians of (the whole step in seconds, its forward + backward without the
    optimizer, the step's minor page faults — fresh pages the kernel mapped and zero-filled);
    per ``extra`` callable, (median seconds, None, median faults). Everything runs round-robin
    (one step of each model and one call of each extra per round, in a seeded random order per
    round: a fixed order would favour whichever runs after the same kind of work) so that load
    changes on a shared machine hit every implementation and the floor alike."""
    opts = {name: make_optimizer(model) for name, (model, _) in models.items()}
    extra = extra or {}
    times: dict[str, list[tuple[float, float, int]]] = {name: [] for name in (*models, *extra)}
    rng = random.Random(0)
    for i in range(reps + 2):  # two warm-up rounds: data-dependent inits, allocator
        for name in rng.sample(list(times), len(times)):
            f0, t0 = minor_faults(), time.perf_counter()
            if name in extra:
                extra[name]()
                if i >= 2:
                    times[name].append((time.perf_counter() - t0, 0.0, minor_faults() - f0))
                continue
            opts[name].zero_grad(set_to_none=True)
            models[name][1](x, c).backward()
            t1 = time.perf_counter()
            opts[name].step()
            if i >= 2:
                times[name].append((time.perf_counter() - t0, t1 - t0, minor_faults() - f0))
    return {name: (statistics.median(v[0] for v in ts), None if name in extra else statistics.median(v[1] for v in ts),
                   int(statistics.median(v[2] for v in ts)))
            for name, ts in times.items()}


def gemm_floor(model: nn.Module, batch: int, hot: bool = False) -> tuple[Callable[[], None], float]:
    """(a callable running every Linear's forward, grad-input and grad-weight matmul once, back to
    back with ``torch.mm(out=)``, and their GFLOP): the step's matmuls at the machine's GEMM
    throughput, timed in the same rounds as the steps.

    Each Linear gets its own operands in the step's layouts (x @ W^T, g @ W, g^T @ x), so every
    weight and activation is read from memory as in the step (the weights alone are 56-170 MB,
    far beyond cache). ``hot``: one set of contiguous operands per distinct shape, reused by every
    Linear of that shape (the previous definition; its operands stay in cache, which overstates
    the throughput a step can reach)."""
    linears = [(mod.in_features, mod.out_features) for mod in model.modules() if isinstance(mod, nn.Linear)]
    calls = []
    if hot:
        shapes = [s for i, o in linears for s in ((batch, i, o), (batch, o, i), (o, batch, i))]
        operands = {s: (torch.randn(s[0], s[1]), torch.randn(s[1], s[2]), torch.empty(s[0], s[2])) for s in set(shapes)}
        calls = [operands[s] for s in shapes]
    else:
        for i, o in linears:
            x, w, g = torch.randn(batch, i), torch.randn(o, i), torch.randn(batch, o)
            calls += [(x, w.t(), torch.empty(batch, o)), (g, w, torch.empty(batch, i)), (g.t(), x, torch.empty(o, i))]

    def run() -> None:
        for a, b, out in calls:
            torch.mm(a, b, out=out)

    return run, sum(6.0 * batch * i * o for i, o in linears) / 1e9


def non_gemm_work(model: nn.Module, batch: int) -> Callable[[], None]:
    """A callable running the memory-bound work of the step that every implementation here does
    besides its GEMMs, with ATen's kernels: the fused Adam step over a copy of the model's
    parameters and, per Linear of the subnets, the bias-grad reduction over the batch and, where a
    LeakyReLU follows it, the activation's forward and backward passes, each on its own operands in
    the step's shapes. Added to the GEMM floor it bounds what a step built on ATen's GEMMs can reach
    (it leaves out the couplings, actnorms, permutations, the loss and all dispatch)."""
    ops: list[Callable[[], object]] = []
    for seq in model.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        layers = list(seq)
        for i, layer in enumerate(layers):
            if not isinstance(layer, nn.Linear):
                continue
            g = torch.randn(batch, layer.out_features)
            ops.append(lambda g=g: g.sum(0))
            act = layers[i + 1] if i + 1 < len(layers) else None
            if isinstance(act, nn.LeakyReLU):
                pre, post, s = torch.randn(batch, layer.out_features), torch.empty(batch, layer.out_features), act.negative_slope
                ops.append(lambda pre=pre, post=post, s=s: torch._C._nn.leaky_relu(pre, s, out=post))
                ops.append(lambda g=g, post=post, s=s: torch.ops.aten.leaky_relu_backward(g, post, s, True))
    params = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p)
    opt = make_optimizer(params)

    def run() -> None:
        for op in ops:
            op()
        opt.step()

    return run


def _batch(cfg: Config) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The seeded input batch x and condition c (None without one) every step of ``cfg`` runs on."""
    torch.manual_seed(0)
    x = torch.randn(cfg.batch, cfg.dim)
    return x, torch.randn(cfg.batch, cfg.cond_dim) if cfg.cond_dim else None


def measure(cfg: Config, reps: int) -> list[dict]:
    from flowkern.check import saved_bytes  # here: ab_worker imports this module against older trees

    x, c = _batch(cfg)
    rows = []
    makers = [("flowkern", lambda: make_flowkern(cfg, False)),
              ("flowkern memory-saving", lambda: make_flowkern(cfg, True)),
              ("flowkern, torch.compile", lambda: make_flowkern_compiled(cfg)),
              ("FrEIA 0.2", lambda: make_freia(cfg)),
              ("normflows 1.7.3", lambda: make_normflows(cfg)),
              ("nflows 0.14", lambda: make_nflows(cfg))]
    models = {name: built for name, make in makers if (built := make()) is not None}
    model = next(iter(models.values()))[0]
    floor_fn, gflop = gemm_floor(model, cfg.batch)
    times = step_times(models, x, c, reps, {"floor": floor_fn, "hot": gemm_floor(model, cfg.batch, hot=True)[0],
                                            "non_gemm": non_gemm_work(model, cfg.batch)})
    for name, (model, loss_fn) in models.items():
        t, t_fb, faults = times[name]
        rows.append(dict(config=cfg.name, impl=name, seconds=t, forward_backward=t_fb, faults=faults,
                         bytes=saved_bytes(lambda: loss_fn(x, c))))
    for key, label in (("hot", "GEMM floor, hot operands"), ("floor", "GEMM floor")):
        rows.append(dict(config=cfg.name, impl=f"{label} ({gflop:.1f} GFLOP)", seconds=times[key][0], forward_backward=None,
                         faults=times[key][2], bytes=None))
    rows.append(dict(config=cfg.name, impl="GEMM floor + Adam, bias-grad and LeakyReLU passes",
                     seconds=times["floor"][0] + times["non_gemm"][0], forward_backward=None, faults=times["non_gemm"][2],
                     bytes=None))
    return rows


def heap_setting() -> str:
    """The allocator settings this process runs with: the glibc malloc variables, GLIBC_TUNABLES
    and LD_PRELOAD from the environment (glibc reads them at start-up), or glibc's defaults."""
    env = {k: v for k, v in os.environ.items()
           if k.startswith("MALLOC_") or k in ("GLIBC_TUNABLES", "LD_PRELOAD")}
    return " ".join(f"`{k}={v}`" for k, v in sorted(env.items())) or "glibc defaults"


def table(quick: bool) -> str:
    """Markdown table of step time, page faults and bytes saved for backward per config and
    library; the caption names the threads, the op backend and the heap settings."""
    configs, reps = (QUICK, 3) if quick else (CONFIGS, 9)
    lines = [f"threads: {torch.get_num_threads()}, torch {torch.__version__}, "
             f"backend: {_backend_name()}, heap: {heap_setting()}", "",
             "| config | implementation | step ms | x GEMM floor | x flowkern | fwd+bwd ms | fwd+bwd x floor "
             "| page faults / step | saved for backward MiB | % of FrEIA bytes |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for cfg in configs:
        rows = measure(cfg, reps)
        floor = next(r["seconds"] for r in rows if r["impl"].startswith("GEMM floor ("))
        base = rows[0]["seconds"]
        freia = next((r["bytes"] for r in rows if r["impl"].startswith("FrEIA")), None)
        for r in rows:
            mib = "" if r["bytes"] is None else f"{r['bytes'] / 2**20:.2f}"
            pct = "" if r["bytes"] is None or not freia else f"{100 * r['bytes'] / freia:.2f}"
            fb = "" if r["forward_backward"] is None else f"{1e3 * r['forward_backward']:.1f} | {r['forward_backward'] / floor:.2f}"
            lines.append(f"| {cfg.name} | {r['impl']} | {1e3 * r['seconds']:.1f} | {r['seconds'] / floor:.2f} "
                         f"| {r['seconds'] / base:.2f} | {fb or ' | '} | {r['faults']} | {mib} | {pct} |")
    return "\n".join(lines)


def _backend_name() -> str:
    import flowkern

    return flowkern.backends.select(torch.device("cpu")).name


# ---- pytest-benchmark cases (pytest bench/bench_flows.py) ----------------------------
def _bench_case(benchmark, memory_saving: bool) -> None:
    cfg = QUICK[0]
    flow, loss_fn = make_flowkern(cfg, memory_saving)
    x = torch.randn(cfg.batch, cfg.dim)
    opt = make_optimizer(flow)

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(x, None).backward()
        opt.step()

    benchmark(step)


def test_bench_flowkern_step(benchmark):
    _bench_case(benchmark, False)


def test_bench_flowkern_memory_saving_step(benchmark):
    _bench_case(benchmark, True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--backend", default=None, help="force a flowkern op backend (e.g. reference)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import flowkern

    if args.backend:
        flowkern.backends.set_default(args.backend)
    print(table(args.quick))


if __name__ == "__main__":
    main()
