"""Regenerate docs/benchmarks.md: ``python bench/report.py [--quick] [--out FILE] [--before REV]``.

Runs every benchmark section and writes one markdown file: the machine, the command and the date,
the methodology (:data:`METHODOLOGY`), then per section its method and its table. Sections (``--sections``, comma-separated):

  op      bench_ops.table          the fused coupling op on CPU against the reference, compiled, floor
  host    bench_host.table         the host cost of one op call (Python, dispatcher, autograd)
  flows   bench_flows.table        flow training steps beside the peers and the GEMM floor
  ab      ab.report                REV (--before) against this checkout (--after), only with --before
  heap    ab.heap_report           glibc defaults vs the MALLOC_* variables, same steps
  peers   bench_peers.table        converted peer models
  image   bench_image.main(argv)   image flows
  gpu     bench_gpu.table          the op on CUDA and Triton (a one-line note without a GPU)

The full run writes docs/benchmarks.md; ``--quick`` (small sizes, a smoke test) only prints unless
``--out`` is given. A section whose optional dependency is missing says so in its place; a
section that fails is printed with its error, the file is written to build/benchmarks.failed.md
instead of FILE, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import io
import os
import platform
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DEFAULT_OUT = ROOT / "docs" / "benchmarks.md"
FAILED_OUT = ROOT / "build" / "benchmarks.failed.md"

__all__ = ["SECTIONS", "build_report", "machine", "main", "splice"]

METHODOLOGY = """\
Every table is produced by the `bench/bench_*.py` module named in its section, in one run of
`bench/report.py`, on the machine in the header; nothing here is a timed unit test (`bench/`
asserts no timings). A shared 2-core VM is noisy: the same call can vary by tens of percent
between minutes. So within a table the implementations run round-robin, one step or call of each
per round in a seeded random order, and a cell is the median over rounds; compare implementations
by the ratios of one table, not across tables or across runs. Before / after and heap
comparisons run each measurement in a fresh process (one model trained alone, as a user trains
it), alternating the two sides.

**Floors.** Each table puts a floor beside the implementations: what the same machine reaches on
the work no implementation can avoid, timed in the same rounds. For the op, the larger of a copy
of the bytes a pass moves and `torch.exp` on as many elements as it evaluates transcendentals. For
flow training steps, the step's own matmuls (each Linear's x W^T, g W and g^T x with
`torch.mm(out=)` on its own operands), and that plus the memory-bound work every implementation
does besides them (the fused Adam step, each Linear's bias-grad reduction, each LeakyReLU's
forward and backward): a bound for any step built on ATen's GEMMs. For image flows, the step's
convolutions alone (NCHW and channels-last).

**Memory-saving steps.** Full recomputation runs each subnet's forward again in backward: four
GEMMs (or convolutions) per layer against the standard step's three, so a memory-saving step
costs at least the standard step plus a third of the floor (the image table shows this bound
beside the measured ratio). Bytes saved for backward are counted by `flowkern.check.saved_bytes`
(`saved_tensors_hooks`, each saved storage once, whole) during forward + loss.

**Per-call cost.** At small shapes (e.g. (256, 64)) a pass is a few microseconds of kernel
and a fixed cost (Python, the dispatcher, argument checks, allocation), and a call that follows
other work (as in a model) meets cold caches; the op table therefore gives both the
per-call (round-robin) time and a warm block (timeit-like) time, and the fixed cost at shape
(1, 64).

**Allocator.** `make bench` runs with the glibc variables of docs/cpu-training.md
(the header's environment row shows what was set); the heap section compares glibc's defaults
with them.

**Targets.** The tables print measurements, not verdicts; what they are read against is in
docs/targets.md."""

OP_METHOD = """\
One call of the fused coupling op (tanh scale, actnorm on, split C/2; s_raw and t the halves of one
subnet output h). "flowkern cpu" takes h whole (`coupling_forward_packed`, as the layers call it),
"cpu, views" passes `h[:, :C_a]` and `h[:, C_a:]`; "reference" is the eager PyTorch reference,
"compiled ref" the reference under `torch.compile`. The floor of a pass is the larger of its bytes
moved / copy bandwidth and its transcendental evaluations / `torch.exp` throughput, each measured on
that many bytes / elements (a `copy_` of the same bytes, `torch.exp` on as many elements). Each
round calls every implementation and both floor halves once, in a fresh seeded random order (a fixed
order would favour whichever implementation follows its own kind); cells are medians over rounds.
The warm-block line times the (256, 64) rows in blocks of ~1 ms per implementation instead; the
per-call line times each pass at shape (1, 64) in its own loop. The packed form gives the same
numbers as the views, but its backward writes one `grad_h`: with two views of h, autograd
scatters each view's gradient into a zero-filled h-shaped buffer and adds the two, extra passes
over h (the "cpu, views" forward+backward column)."""

FLOWS_METHOD = """\
One NLL training step (zero_grad, forward + loss, backward, `torch.optim.Adam(fused=True)` step),
batch 256, float32. IIN: D = 64, 12 x [ActNorm, double affine coupling, shuffle], FrEIA GLOW-style
subnets Linear(32, 512), 2 x Linear(512, 512), Linear(512, 64) with LeakyReLU; CompVis: the same
with separate s and t nets; cINN: D = 128, 20 blocks, hidden 1024, a 128-d condition. FrEIA,
normflows and nflows build the same architecture where they can. Every model and floor runs
round-robin (one step of each per round in a seeded random order, two warm-up rounds), cells are
medians. GEMM floor: every
matmul of the step (each Linear's x W^T, g W, g^T x) run back to back with `torch.mm(out=)` on its
own operands; "hot operands": one operand set per distinct shape, reused (stays in cache). "GEMM
floor + Adam, bias-grad and LeakyReLU passes" adds the memory-bound work every implementation does
besides its GEMMs, with ATen's kernels on the step's shapes: a bound for any step built on ATen's
GEMMs. "flowkern, torch.compile": standard mode under `torch.compile(fullgraph=True)`. Page faults:
minor faults per step (`getrusage`). Saved for backward: tensors packed by autograd during forward
+ loss (`flowkern.check.saved_bytes`: each saved storage once, whole)."""

AB_METHOD = """\
The same training steps (the IIN, CompVis and cINN configs above; normflows' notebook Glow at 32x32
and 128x128 converted; standard and memory-saving modes) on two source trees: "A" is the revision
given to `--before`, "B" the tree being measured. `bench/ab.py` exports a revision to
`build/ab/<commit>/` and builds its CPU extension there once; one script, `bench/ab_worker.py`,
times both trees (`PYTHONPATH` selects the tree), using only API both have. Each measurement is a
fresh process training one workload in one mode alone; processes alternate A / B per round,
workload and mode, under glibc's default heap and under the variables of the heap section. A
process reports the median of its timed steps; a cell is the median over rounds, "B / A" the ratio
of those medians, the per-round ratios each pair a B process with the A process run just before it."""

HEAP_METHOD = """\
This checkout's training steps (the workloads of `bench/ab.py`) with glibc's default heap against
the variables in the table's caption (the ones `make demo` and `make bench` set;
docs/cpu-training.md), in alternating fresh processes. glibc reads them at start-up:
`MALLOC_MMAP_THRESHOLD_` serves blocks below it from the heap instead of a fresh mapping (and turns
off the threshold's adaptation), `MALLOC_TRIM_THRESHOLD_` keeps up to that much free memory at the
top of the heap instead of returning it. With glibc's defaults the memory a step's backward frees
goes back to the system and the next forward faults it in again page by page; with the variables it
stays in the heap. Fewer page faults, not different numbers: the losses are the same."""

PEERS_METHOD = """\
Small FrEIA, normflows and nflows models and their `flowkern.compat.convert` conversions: the
median forward + backward step and the bytes saved for backward, peer vs conversion, and the loss
difference between the two (float32 rounding)."""

IMAGE_METHOD = """\
normflows' notebook Glow (`examples/image/notebook_glow.py`: L levels of K `GlowBlock`s and a
`Squeeze`, `Merge` between levels, class-conditional diagonal Gaussian bases over 10 classes), its
actnorms initialised on one sample, beside `flowkern.compat.convert` of it (the same weights):
standard, memory-saving (`memory_saving=True`; "chunk 1": the batch one sample at a time) and
under `torch.compile`; one training step is forward + `forward_kld` + backward + `torch.optim.Adam`,
CPU float32. Every measurement is a fresh process of `bench/image_worker.py`.

**Step times.** A process's step time is the median over its timed steps after two warm-up steps,
in `make bench`'s environment; its page faults per step the minor faults (`getrusage`) of those
steps over their number. Each implementation runs in `--rounds` processes, alternating with the
others in a seeded random order per round; a cell is the median over its processes. **Paired
ratios**: the machine's speed drifts between processes, so `--rounds` further processes each step
normflows, flowkern and memory-saving (copies of the same weights) in turn, in an order rotating
every round, for 3 x steps rounds after two warm-up rounds; a round's ratio is normflows' (or
memory-saving's) step time over flowkern's in that round; the table gives the median and quartiles
over all rounds. They run twice: in `make bench`'s environment and under glibc's default heap
(docs/cpu-training.md). The `MALLOC_MMAP_MAX_=0` row repeats the 128x128 configuration with that
variable added: no block, however large, gets a mapping of its own.

**Conv floor**: every convolution of the step (each block's 1x1 and its subnet's three), forward,
grad-input and grad-weight on tensors of the step's shapes, back to back, NCHW and channels-last.
The memory-saving step re-runs the subnets' forward, a third of the floor: the bound beside its
ratio is 1 + floor / 3 / standard step.

**Memory** is measured by one-step processes under glibc's default heap (its trim threshold would
otherwise keep freed heap resident and measure the setting, not the model): peak RSS is the
process's `VmHWM`, step RSS subtracts the RSS after the model, optimizer and batch were built (the
interpreter and torch alone are about 0.5 GiB). Saved for backward: tensors packed by autograd
during forward + loss (`flowkern.check.saved_bytes`), per sample. Growth: the same at batch 8 over
K, resolution and levels. Largest side: square images, sides multiples of 32, one step at batch 8
in a fresh process whose RSS is watched and which is killed above the budget (8 GiB); normflows'
side is searched, memory-saving chunk 1 is tried from four times normflows' side down."""

HOST_METHOD = """\
The host cost of one fused coupling call, where the kernel's work is about zero (tiny tensors, one
thread): the compiled op beside the same result as a chain of eager torch ops and a one-op floor
(`torch.mul`), without grad and with forward + `backward()`, timed in the same rounds; then a
whole model where the host decides: normflows' notebook Glow and its conversion, `log_prob` of one
image (`bench/bench_host.py`'s docstring has the method)."""

GPU_METHOD = """\
The fused op on CUDA tensors: the cuda and triton backends beside the reference, fp32 and bf16,
`triton.testing.do_bench` medians. Achieved bandwidth counts the bytes the fused op must move once
(forward: read x, s_raw, t, write y; backward: read grad_y, x, s_raw, write grad_x, grad_s_raw,
grad_t), against the device's peak (2 x memory clock x bus width) where the driver reports it."""


def _module(name: str):
    for path in (ROOT, BENCH):  # the bench modules, and this checkout's flowkern whether installed or not
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    return importlib.import_module(name)


def _table_of(name: str) -> Callable[[argparse.Namespace], str]:
    return lambda args: _module(name).table(args.quick)


def _ab(args: argparse.Namespace) -> str | None:
    if args.before is None:  # nothing to compare with: the section is left out
        return None
    return _module("ab").report(args.before, args.after, rounds=args.ab_rounds, steps=args.ab_steps, quick=args.quick)


def _heap(args: argparse.Namespace) -> str:
    return _module("ab").heap_report(args.after, rounds=args.ab_rounds, steps=args.ab_steps, quick=args.quick)


def _image(args: argparse.Namespace) -> str | None:
    """What bench_image.main(argv) printed."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        _module("bench_image").main(["--quick"] if args.quick else [])
    return buf.getvalue()


# key, heading, method, producer (None from a producer: the section is left out)
SECTIONS: list[tuple[str, str, str, Callable[[argparse.Namespace], str | None]]] = [
    ("op", "The op (CPU)", OP_METHOD, _table_of("bench_ops")),
    ("host", "Host cost of one op call (CPU)", HOST_METHOD,
     lambda args: _module("bench_host").table(args.quick) + "\n\n" + _module("bench_host").glow_table(args.quick)),
    ("flows", "Flow training steps (CPU)", FLOWS_METHOD, _table_of("bench_flows")),
    ("ab", "Before / after: training steps (CPU)", AB_METHOD, _ab),
    ("heap", "glibc heap settings: training steps (CPU)", HEAP_METHOD, _heap),
    ("peers", "Converted peer models (CPU)", PEERS_METHOD, _table_of("bench_peers")),
    ("image", "Image flows", IMAGE_METHOD, _image),
    ("gpu", "GPU", GPU_METHOD, _table_of("bench_gpu")),
]
OPTIONAL = {"flows", "peers", "image", "gpu"}  # a missing dependency (ImportError) is noted, not an error


def _run(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _isa() -> str:
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "?"
    return ", ".join(f for f in ("avx2", "fma", "avx512f", "avx512bw", "avx512_bf16", "amx_tile") if f in flags)


def _memory_gib() -> str:
    try:
        with open("/proc/meminfo") as f:
            kib = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
        return f"{kib / 2**20:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        return "?"


def machine() -> list[tuple[str, str]]:
    """(field, value) rows describing the machine, software and environment of this run."""
    import torch

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    rows = [("CPU", f"{_cpu_model()}, {os.cpu_count()} logical CPUs ({usable} usable); {_isa()}"),
            ("memory", _memory_gib()),
            ("OS", f"{platform.system()} {platform.release()} ({platform.machine()})"),
            ("torch", f"{torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
                      f"{torch.get_num_threads()} intra-op threads"),
            ("Python", platform.python_version())]
    gpu = "none"
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        gpu = f"{p.name} ({torch.cuda.device_count()}), {p.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}"
    rows.append(("GPU", gpu))
    env = {k: v for k, v in os.environ.items()
           if k.startswith(("MALLOC_", "OMP_", "MKL_", "FLOWKERN_")) or k in ("GLIBC_TUNABLES", "LD_PRELOAD")}
    rows.append(("environment", ", ".join(f"`{k}={v}`" for k, v in sorted(env.items())) or "no allocator, OpenMP or "
                 "flowkern variables set"))
    if hasattr(os, "getloadavg"):
        rows.append(("load average at start", " / ".join(f"{v:.2f}" for v in os.getloadavg()) + " (1 / 5 / 15 min)"))
    return rows


def _header(argv: list[str], quick: bool) -> str:
    commit = _run(["git", "rev-parse", "--short=9", "HEAD"]) or "?"
    if _run(["git", "status", "--porcelain", "--untracked-files=no"]):
        commit += ", with uncommitted changes"
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    rows = [("command", f"`{' '.join(['python', 'bench/report.py', *argv])}`" + (" (quick sizes)" if quick else "")),
            ("date", date), ("commit", commit), *machine()]
    return "\n".join(["# flowkern benchmarks", "",
                      "Generated by `make bench` (`python bench/report.py`); edit `bench/report.py` and the "
                      "`bench/bench_*.py` modules, not this file. Times are wall-clock medians on CPU unless a "
                      "section says otherwise; the method of each table is stated above it.", "",
                      "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])


def build_report(args: argparse.Namespace, argv: list[str]) -> tuple[str, list[str]]:
    """(the markdown, the keys of the sections that failed)."""
    parts, failed = [_header(argv, args.quick), f"## Methodology\n\n{METHODOLOGY}"], []
    for key, heading, method, produce in SECTIONS:
        if key not in args.sections:
            continue
        print(f"[report] {key} ...", file=sys.stderr, flush=True)
        try:
            body = produce(args)
        except ImportError as e:
            if key not in OPTIONAL:
                raise
            body = f"Not run: {e}."
        except (Exception, SystemExit) as e:  # noqa: BLE001 - every section's failure is reported, then fails the run
            traceback.print_exc()
            failed.append(key)
            body = f"**Failed**: {type(e).__name__}: {e}"
        if body is None:
            continue
        parts.append("\n\n".join(p for p in (f"## {heading}", method, body.strip()) if p))
    return "\n\n".join(parts) + "\n", failed


def splice(old: str, new: str, note: str) -> str:
    """``old`` (a report) with each ``## `` section of ``new`` in its place (appended where ``old``
    has no section of that heading), ``note`` under each replaced heading; ``new``'s header and
    methodology are dropped (``old``'s date and machine still describe the other sections)."""
    def split(text: str) -> tuple[str, dict[str, str]]:
        head, *secs = text.split("\n## ")
        return head, {sec.split("\n", 1)[0]: sec for sec in secs}

    head, sections = split(old)
    for heading, sec in split(new)[1].items():
        if heading == "Methodology":
            continue
        title, _, body = sec.partition("\n")
        sections[heading] = f"{title}\n\n{note}\n{body}".rstrip() + "\n"
    return "\n## ".join([head.rstrip() + "\n", *(v.rstrip() + "\n" for v in sections.values())])


def _sections(s: str) -> list[str]:
    keys = [k for k, *_ in SECTIONS]
    items = [x for x in s.split(",") if x]
    bad = [x for x in items if x not in keys]
    if bad or not items:
        raise argparse.ArgumentTypeError(f"choose from {','.join(keys)}, got {s!r}")
    return items


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes and few repetitions (a smoke test; prints only)")
    p.add_argument("--out", help=f"write the markdown here (default {DEFAULT_OUT.relative_to(ROOT)}, "
                   "none with --quick)")
    p.add_argument("--sections", type=_sections, default=[k for k, *_ in SECTIONS],
                   help="comma-separated subset of " + ",".join(k for k, *_ in SECTIONS))
    p.add_argument("--no-ab", action="store_true", help="leave out the ab and heap sections")
    p.add_argument("--update", action="store_true",
                   help="replace only the chosen --sections in the existing file, each dated and described there")
    p.add_argument("--before", default=None, help="ab: the revision or tree to compare with (no ab section without)")
    p.add_argument("--after", default=None, help="ab, heap: the revision or tree measured (default: this checkout)")
    p.add_argument("--ab-rounds", type=int, default=None, help="ab, heap: alternating rounds (default 5; 2 quick)")
    p.add_argument("--ab-steps", type=int, default=None, help="ab, heap: timed steps per process (default 6; 3 quick)")
    args = p.parse_args(argv)
    if args.no_ab:
        args.sections = [k for k in args.sections if k not in ("ab", "heap")]
    report, failed = build_report(args, argv)
    print(report)
    out = Path(args.out) if args.out else (None if args.quick else DEFAULT_OUT)
    if args.update and out is not None and out.exists() and not failed:
        head = report.split("\n## ", 1)[0]
        rows = [line for line in head.splitlines() if line.startswith("| ") and not line.startswith("| |")]
        note = "Regenerated alone, not with the rest of this file: " + "; ".join(
            r.strip("| ").replace(" | ", ": ", 1) for r in rows) + "."
        report = splice(out.read_text(), report, note)
    if failed and out is not None:
        print(f"[report] sections failed: {', '.join(failed)}; not overwriting {out}, wrote {FAILED_OUT}",
              file=sys.stderr)
        out = FAILED_OUT
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report)
        print(f"[report] wrote {out}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
