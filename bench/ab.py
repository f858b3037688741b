"""Before/after A/B of the flow training steps, and the glibc heap A/B, in fresh processes.

    python bench/ab.py [--before REV] [--after PATH_OR_REV] [--rounds N] [--steps N] [--quick]
                       [--models iin,compvis,cinn] [--modes standard,memory-saving]
                       [--skip-ab] [--skip-heap] [--json FILE]

Each side is a source tree: a REV is exported (``git archive``) to ``build/ab/<commit>/`` and its
CPU extension built there once (``FLOWKERN_NO_CUDA=1 MAX_JOBS=2 python setup.py build_ext
--inplace``; the tree is reused while ``build/ab/<commit>/.ab-built`` exists); a PATH is used as
it is and must hold its built extension. ``--after`` defaults to this checkout.

Every measurement is one fresh process of ``bench/ab_worker.py`` (this checkout's copy for both
sides, ``PYTHONPATH`` naming the side's tree) training one model in one mode alone. Processes
alternate: per round, per model and mode, before then after. A process reports the median of
its timed steps; a table cell is the median over rounds, "after / before" the ratio of those
medians, and the spread the range of the per-round ratios (after over the before run just
beside it). The environment's ``MALLOC_*`` and ``GLIBC_TUNABLES`` are removed: a side runs with
glibc's default heap unless it is one of the sides below.

Every side also runs with :data:`HEAP_ENV` in the environment (the variables the Makefile's
``MALLOC_ENV`` sets for ``make demo`` and ``make bench``: mmap threshold 32 MiB, glibc's 64-bit
maximum; trim threshold 1 GiB), in the same alternation: the before / after table has a row per
heap setting, and the heap table compares the after tree's two.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BEFORE", "HEAP_ENV", "default_heap_env", "MODELS", "MODES", "Tree", "resolve", "measure_ab", "report", "main"]

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "ab_worker.py"
CACHE = ROOT / "build" / "ab"
BEFORE = "b5b51df"  # the commit before issue 17's rebuild of the op layer
MODELS = ("iin", "compvis", "cinn")
MODES = ("standard", "memory-saving")
LABELS = {"iin": "IIN", "compvis": "IIN, CompVis s/t nets", "cinn": "cINN"}
HEAP_ENV = {  # as the Makefile's MALLOC_ENV (README.md, "CPU training")
    "MALLOC_MMAP_THRESHOLD_": str(32 << 20),  # blocks below it from the heap; glibc's 64-bit maximum
    "MALLOC_TRIM_THRESHOLD_": str(1 << 30),  # free memory kept at the top of the heap before trimming
}
BUILT = ".ab-built"
TOLERANCE = 1.03  # issue 17: a flow training step within 3% (or faster)


@dataclass(frozen=True)
class Tree:
    spec: str  # what the user named
    path: Path
    desc: str  # commit, or path and HEAD, for the table caption


def _log(msg: str) -> None:
    print(f"[ab] {msg}", file=sys.stderr, flush=True)


def _git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def _has_extension(path: Path) -> bool:
    return any((path / "flowkern").glob("_C*.so"))


def _build_env() -> dict[str, str]:
    env = dict(os.environ, FLOWKERN_NO_CUDA="1")
    env.setdefault("MAX_JOBS", "2")
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])  # the venv's ninja
    env.pop("PYTHONPATH", None)
    return env


def prepare(sha: str) -> Path:
    """``build/ab/<sha>``: the commit's files with the CPU extension built in place (once)."""
    dest = CACHE / sha
    if (dest / BUILT).exists():
        return dest
    tmp = CACHE / f"{sha}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.mkdir(parents=True)
    _log(f"exporting {sha[:12]} to {tmp}")
    archive = subprocess.run(["git", "archive", "--format=tar", sha], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
    _log(f"building its CPU extension (FLOWKERN_NO_CUDA=1 MAX_JOBS={_build_env()['MAX_JOBS']}; minutes on 2 cores)")
    t0 = time.monotonic()
    with open(tmp / "ab-build.log", "w") as log:
        proc = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=tmp, env=_build_env(),
                              stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0 or not _has_extension(tmp):
        tail = "\n".join((tmp / "ab-build.log").read_text().splitlines()[-30:])
        raise RuntimeError(f"building {sha[:12]} failed (log: {tmp / 'ab-build.log'}):\n{tail}")
    _log(f"built in {time.monotonic() - t0:.0f} s")
    tmp.rename(dest)
    (dest / BUILT).write_text(f"{sha}\n")
    return dest


def resolve(spec: str | None) -> Tree:
    """A side of the A/B: None is this checkout, an existing directory is used as it is, anything
    else is a git revision of this repository, exported and built under build/ab/."""
    if spec is None or os.path.isdir(spec):
        path = ROOT if spec is None else Path(spec).resolve()
        if not (path / "flowkern" / "__init__.py").exists():
            raise SystemExit(f"ab: {path} holds no flowkern package")
        if not _has_extension(path):
            raise SystemExit(f"ab: {path}/flowkern has no built extension (_C*.so); build it first, e.g.\n"
                             f"  cd {path} && FLOWKERN_NO_CUDA=1 MAX_JOBS=2 {sys.executable} setup.py build_ext "
                             "--inplace")
        try:
            head = _git("rev-parse", "--short=9", "HEAD", cwd=path)
            dirty = bool(_git("status", "--porcelain", "--untracked-files=no", cwd=path))
            desc = f"{path} (HEAD {head}{', with uncommitted changes' if dirty else ''})"
        except (subprocess.CalledProcessError, FileNotFoundError):
            desc = str(path)
        return Tree(spec or "current tree", path, desc)
    try:
        sha = _git("rev-parse", "--verify", f"{spec}^{{commit}}")
    except subprocess.CalledProcessError:
        raise SystemExit(f"ab: {spec!r} is neither a directory nor a commit of {ROOT}") from None
    return Tree(spec, prepare(sha), f"commit {sha[:9]}")


def default_heap_env() -> dict[str, str]:
    """This process's environment without glibc's malloc settings (``MALLOC_*`` and
    ``GLIBC_TUNABLES``, which can carry the same): a child started with it runs glibc's default heap."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}


def _worker_env(tree: Tree, heap_env: bool) -> dict[str, str]:
    env = default_heap_env()
    if heap_env:
        env.update(HEAP_ENV)
    env["PYTHONPATH"] = str(tree.path)
    return env


def run_worker(tree: Tree, model: str, mode: str, *, steps: int, quick: bool, threads: int | None,
               heap_env: bool = False) -> dict:
    cmd = [sys.executable, str(WORKER), "--model", model, "--mode", mode, "--steps", str(steps)]
    cmd += ["--quick"] if quick else []
    cmd += ["--threads", str(threads)] if threads else []
    proc = subprocess.run(cmd, cwd=tree.path, env=_worker_env(tree, heap_env), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ab_worker failed on {tree.desc} ({model}, {mode}):\n{proc.stderr[-4000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if Path(result["flowkern"]).resolve() != (tree.path / "flowkern").resolve():
        raise RuntimeError(f"ab_worker imported flowkern from {result['flowkern']}, not from {tree.path}")
    return result


Runs = dict[tuple[str, str], dict[str, list[dict]]]  # (model, mode) -> side -> one result per round


def _alternate(sides: dict[str, tuple[Tree, bool]], cases: list[tuple[str, str]], rounds: int, steps: int,
               quick: bool, threads: int | None) -> Runs:
    runs: Runs = {case: {side: [] for side in sides} for case in cases}
    for r in range(rounds):
        for model, mode in cases:
            for side, (tree, heap_env) in sides.items():
                res = run_worker(tree, model, mode, steps=steps, quick=quick, threads=threads, heap_env=heap_env)
                runs[(model, mode)][side].append(res)
                _log(f"round {r + 1}/{rounds} {model:7s} {mode:13s} {side:15s} {1e3 * res['median_s']:8.1f} ms  "
                     f"{res['faults']} faults/step")
    return runs


HEAP_SET = ", MALLOC_* set"  # suffix of the sides that run with HEAP_ENV
_MEASURED: dict[tuple, Runs] = {}  # one alternation serves both tables of a report.py run


def measure_ab(before: Tree, after: Tree, cases, rounds: int, steps: int, quick: bool, threads: int | None) -> Runs:
    """One alternation of four sides per round, model and mode: before and after, each with glibc's
    defaults and with :data:`HEAP_ENV` (the before / after table reads both, the heap table the
    after tree's two)."""
    key = (before.path, after.path, tuple(cases), rounds, steps, quick, threads)  # not desc: it names git state
    if key not in _MEASURED:
        sides = {"before": (before, False), "after": (after, False),
                 "before" + HEAP_SET: (before, True), "after" + HEAP_SET: (after, True)}
        _MEASURED[key] = _alternate(sides, cases, rounds, steps, quick, threads)
    return _MEASURED[key]


def _summary(runs: Runs, base: str, new: str) -> list[dict]:
    rows = []
    for (model, mode), sides in runs.items():
        b = [r["median_s"] for r in sides[base]]
        a = [r["median_s"] for r in sides[new]]
        ratios = [y / x for x, y in zip(b, a)]
        rows.append(dict(model=model, mode=mode, base_ms=1e3 * statistics.median(b), new_ms=1e3 * statistics.median(a),
                         ratio=statistics.median(a) / statistics.median(b), lo=min(ratios), hi=max(ratios),
                         base_faults=statistics.median(r["faults"] for r in sides[base]),
                         new_faults=statistics.median(r["faults"] for r in sides[new])))
    return rows


def _backends(runs: Runs) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for sides in runs.values():
        for side, rs in sides.items():
            out.setdefault(side, set()).update(r["backend"] for r in rs)
    return out


def _plan(rounds: int, steps: int, quick: bool) -> tuple[str, str]:
    """Caption phrases: the rounds, and the steps each process times."""
    configs = " on the bench_flows.QUICK configs" if quick else ""
    return (f"{rounds} round{'s' * (rounds != 1)} of fresh processes",
            f"{steps} timed step{'s' * (steps != 1)} (after 2 warm-up steps){configs}")


def ab_table(runs: Runs, before: Tree, after: Tree, rounds: int, steps: int, quick: bool = False) -> str:
    plan_rounds, plan_steps = _plan(rounds, steps, quick)
    env = " ".join(f"{k}={v}" for k, v in HEAP_ENV.items())
    one = next(iter(next(iter(runs.values()))["after"]))
    lines = [f"before: {before.desc}; after: {after.desc}. torch {one['torch']}, {one['threads']} threads, "
             f"op backend on CPU: " + ", ".join(f"{s} {'/'.join(sorted(b))}" for s, b in _backends(runs).items())
             + f". {plan_rounds} alternating before / after, each with glibc's default heap and with `{env}`; "
             f"each process trains one model alone for {plan_steps} and reports their median.", "",
             "| model | mode | heap | before ms | after ms | after / before | per-round ratios (min–max) "
             f"| ≤ {TOLERANCE:.2f} | page faults / step before | after |",
             "|---|---|---|---:|---:|---:|---:|---|---:|---:|"]
    for heap, suffix in (("glibc defaults", ""), ("MALLOC_* set", HEAP_SET)):
        for r in _summary(runs, "before" + suffix, "after" + suffix):
            lines.append(f"| {LABELS[r['model']]} | {r['mode']} | {heap} | {r['base_ms']:.1f} | {r['new_ms']:.1f} "
                         f"| {r['ratio']:.3f} "
                         f"| {r['lo']:.3f}–{r['hi']:.3f} | {'yes' if r['ratio'] <= TOLERANCE else '**no**'} "
                         f"| {r['base_faults']:.0f} | {r['new_faults']:.0f} |")
    return "\n".join(lines)


def heap_table(runs: Runs, after: Tree, rounds: int, steps: int, quick: bool = False) -> str:
    env = " ".join(f"{k}={v}" for k, v in HEAP_ENV.items())
    plan_rounds, plan_steps = _plan(rounds, steps, quick)
    lines = [f"tree: {after.desc}. {plan_rounds} alternating glibc's defaults / `{env}`; "
             f"each process trains one model alone for {plan_steps}.", "",
             "| model | mode | glibc defaults ms | MALLOC_* set ms | set / defaults | per-round ratios (min–max) "
             "| page faults / step, defaults | set |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in _summary(runs, "after", "after" + HEAP_SET):
        lines.append(f"| {LABELS[r['model']]} | {r['mode']} | {r['base_ms']:.1f} | {r['new_ms']:.1f} "
                     f"| {r['ratio']:.3f} "
                     f"| {r['lo']:.3f}–{r['hi']:.3f} | {r['base_faults']:.0f} | {r['new_faults']:.0f} |")
    return "\n".join(lines)


def report(before: str | None = BEFORE, after: str | None = None, *, rounds: int | None = None,
           steps: int | None = None, quick: bool = False, models=MODELS, modes=MODES, threads: int | None = None,
           ab: bool = True, heap: bool = True, raw: dict | None = None) -> str:
    """Markdown: the before/after table (``ab``) and the heap table (``heap``), measured now.
    ``raw``, if given, receives the per-process results."""
    rounds = rounds or (2 if quick else 5)
    steps = steps or (3 if quick else 6)
    cases = [(m, mode) for m in models for mode in modes]
    after_tree = resolve(after)
    before_tree = resolve(before)
    runs = measure_ab(before_tree, after_tree, cases, rounds, steps, quick, threads)
    if raw is not None:
        raw["ab"] = [dict(model=k[0], mode=k[1], runs=v) for k, v in runs.items()]
    parts = ([ab_table(runs, before_tree, after_tree, rounds, steps, quick)] if ab else []) + \
        ([heap_table(runs, after_tree, rounds, steps, quick)] if heap else [])
    return "\n\n".join(parts)


def _csv(choices: tuple[str, ...]):
    def parse(s: str) -> tuple[str, ...]:
        items = tuple(x for x in s.split(",") if x)
        bad = [x for x in items if x not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"choose from {','.join(choices)}, got {s!r}")
        return items
    return parse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--before", default=BEFORE, help=f"git revision or tree path (default {BEFORE}, the commit "
                   "before issue 17's op-layer rebuild)")
    p.add_argument("--after", default=None, help="git revision or tree path (default: this checkout)")
    p.add_argument("--rounds", type=int, default=None, help="alternating rounds (default 5; 2 with --quick)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per process (default 6; 3 with --quick)")
    p.add_argument("--models", type=_csv(MODELS), default=MODELS, help="comma-separated (default: all)")
    p.add_argument("--modes", type=_csv(MODES), default=MODES, help="comma-separated (default: both)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads in the workers")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(p)
    p.add_argument("--quick", action="store_true", help="bench_flows.QUICK configs, fewer rounds and steps")
    p.add_argument("--skip-ab", action="store_true", help="print only the heap table")
    p.add_argument("--skip-heap", action="store_true", help="print only the before/after table")
    p.add_argument("--json", help="also write every process's result to this file")
    args = p.parse_args(argv)
    raw: dict = {}
    print(report(args.before, args.after, rounds=args.rounds, steps=args.steps, quick=args.quick, models=args.models,
                 modes=args.modes, threads=args.threads, ab=not args.skip_ab, heap=not args.skip_heap, raw=raw))
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=1))


if __name__ == "__main__":
    main()
