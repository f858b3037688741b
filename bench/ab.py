"""Before / after: time training steps of two revisions against each other, in fresh processes.

    python bench/ab.py REV_A REV_B [WORKLOADS] [--modes standard,memory-saving] [--rounds N]
                       [--steps N] [--heaps defaults,malloc] [--quick] [--threads N] [--json FILE]

REV_A, REV_B: git revisions of this repository (a commit, tag or branch), or directories holding a
flowkern tree with its extension built (``.`` is this checkout). A revision is exported
(``git archive``) to ``build/ab/<commit>/`` and its CPU extension built there once
(``FLOWKERN_NO_CUDA=1 python setup.py build_ext --inplace``; reused while
``build/ab/<commit>/.ab-built`` exists). WORKLOADS, comma-separated (default: all): ``iin``,
``compvis``, ``cinn`` (vector flows, ``bench_flows``' configs), ``glow32``, ``glow128``
(normflows' notebook Glow converted, ``image_worker``'s configs); each in every mode of
``--modes``.

Every measurement is one fresh process of ``bench/ab_worker.py`` (this checkout's copy for both
sides, ``PYTHONPATH`` naming the side's tree) training one workload in one mode alone. Processes
alternate: per round, per workload and mode, A then B. A process reports the median of its timed
steps; a cell is the median over rounds, "B / A" the ratio of those medians, and the spread the
range of the per-round ratios. ``--heaps`` picks the heap settings every side runs under, in the
same alternation: ``defaults`` (glibc's defaults: ``MALLOC_*`` and ``GLIBC_TUNABLES`` removed
from the environment) and ``malloc`` (:data:`HEAP_ENV`, what ``make bench`` and ``make demo``
set; docs/cpu-training.md). ``heap_report`` compares one tree under the two.
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

__all__ = ["HEAP_ENV", "HEAPS", "MODELS", "MODES", "Tree", "default_heap_env", "resolve", "measure", "ab_table",
           "heap_table", "report", "heap_report", "main"]

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "ab_worker.py"
CACHE = ROOT / "build" / "ab"
BUILT = ".ab-built"  # marks an exported revision whose extension was built
MODELS = ("iin", "compvis", "cinn", "glow32", "glow128")  # ab_worker's workloads
MODES = ("standard", "memory-saving")
LABELS = {"iin": "IIN", "compvis": "IIN, CompVis s/t nets", "cinn": "cINN", "glow32": "Glow 32x32",
          "glow128": "Glow 128x128"}
HEAP_ENV = {  # as the Makefile's MALLOC_ENV (docs/cpu-training.md)
    "MALLOC_MMAP_THRESHOLD_": str(32 << 20),  # blocks below it from the heap; glibc's 64-bit maximum
    "MALLOC_TRIM_THRESHOLD_": str(1 << 30),  # free memory kept at the top of the heap before trimming
}
HEAPS = {"defaults": "glibc defaults", "malloc": "MALLOC_* set"}  # --heaps choices and their table labels


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
    """A side: None is this checkout, an existing directory is used as it is, anything else is a
    git revision of this repository, exported and built under build/ab/."""
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
        return Tree(spec or "this checkout", path, desc)
    try:
        sha = _git("rev-parse", "--verify", f"{spec}^{{commit}}")
    except subprocess.CalledProcessError:
        raise SystemExit(f"ab: {spec!r} is neither a directory nor a commit of {ROOT}") from None
    return Tree(spec, prepare(sha), f"commit {sha[:9]}")


def default_heap_env() -> dict[str, str]:
    """This process's environment without glibc's malloc settings (``MALLOC_*`` and
    ``GLIBC_TUNABLES``, which can carry the same): a child started with it runs glibc's default heap."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}


def run_worker(tree: Tree, model: str, mode: str, heap: str, *, steps: int, quick: bool,
               threads: int | None) -> dict:
    """One fresh ``ab_worker.py`` process on ``tree`` under ``heap`` (a key of :data:`HEAPS`)."""
    cmd = [sys.executable, str(WORKER), "--model", model, "--mode", mode, "--steps", str(steps)]
    cmd += ["--quick"] if quick else []
    cmd += ["--threads", str(threads)] if threads else []
    env = default_heap_env() | (HEAP_ENV if heap == "malloc" else {}) | {"PYTHONPATH": str(tree.path)}
    proc = subprocess.run(cmd, cwd=tree.path, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ab_worker failed on {tree.desc} ({model}, {mode}):\n{proc.stderr[-4000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if Path(result["flowkern"]).resolve() != (tree.path / "flowkern").resolve():
        raise RuntimeError(f"ab_worker imported flowkern from {result['flowkern']}, not from {tree.path}")
    return result


Runs = dict[tuple[str, str], dict[tuple[str, str], list[dict]]]  # (model, mode) -> (side, heap) -> rounds


def measure(trees: dict[str, Tree], heaps: tuple[str, ...], cases: list[tuple[str, str]], rounds: int, steps: int,
            quick: bool, threads: int | None) -> Runs:
    """Per round, per (model, mode): one process per tree and heap, in that order."""
    runs: Runs = {case: {(side, heap): [] for side in trees for heap in heaps} for case in cases}
    for r in range(rounds):
        for model, mode in cases:
            for side, tree in trees.items():
                for heap in heaps:
                    res = run_worker(tree, model, mode, heap, steps=steps, quick=quick, threads=threads)
                    runs[(model, mode)][(side, heap)].append(res)
                    _log(f"round {r + 1}/{rounds} {model:7s} {mode:13s} {side} {HEAPS[heap]:14s} "
                         f"{1e3 * res['median_s']:8.1f} ms  {res['faults']} faults/step")
    return runs


def _summary(runs: Runs, base: tuple[str, str], new: tuple[str, str]) -> list[dict]:
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


def _caption(runs: Runs, rounds: int, steps: int, quick: bool) -> str:
    one = next(iter(next(iter(runs.values())).values()))[0]
    backends = sorted({r["backend"] for sides in runs.values() for rs in sides.values() for r in rs})
    configs = " (the QUICK configs)" if quick else ""
    return (f"torch {one['torch']}, {one['threads']} threads, op backend on CPU: {'/'.join(backends)}. "
            f"{rounds} round{'s' * (rounds != 1)} of fresh processes, each training one workload alone for {steps} "
            f"timed step{'s' * (steps != 1)} after 2 warm-up steps{configs} and reporting their median.")


def ab_table(runs: Runs, a: Tree, b: Tree, heaps: tuple[str, ...], rounds: int, steps: int, quick: bool) -> str:
    lines = [f"A: {a.desc}; B: {b.desc}. " + _caption(runs, rounds, steps, quick), "",
             "| workload | mode | heap | A ms | B ms | B / A | per-round ratios (min–max) | page faults / step A | B |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for heap in heaps:
        for r in _summary(runs, ("A", heap), ("B", heap)):
            lines.append(f"| {LABELS[r['model']]} | {r['mode']} | {HEAPS[heap]} | {r['base_ms']:.1f} | {r['new_ms']:.1f} "
                         f"| {r['ratio']:.3f} | {r['lo']:.3f}–{r['hi']:.3f} | {r['base_faults']:.0f} "
                         f"| {r['new_faults']:.0f} |")
    return "\n".join(lines)


def heap_table(runs: Runs, tree: Tree, rounds: int, steps: int, quick: bool) -> str:
    env = " ".join(f"{k}={v}" for k, v in HEAP_ENV.items())
    lines = [f"tree: {tree.desc}; glibc's defaults alternating with `{env}`. " + _caption(runs, rounds, steps, quick),
             "", "| workload | mode | glibc defaults ms | MALLOC_* set ms | set / defaults | per-round ratios (min–max) "
             "| page faults / step, defaults | set |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in _summary(runs, ("A", "defaults"), ("A", "malloc")):
        lines.append(f"| {LABELS[r['model']]} | {r['mode']} | {r['base_ms']:.1f} | {r['new_ms']:.1f} | {r['ratio']:.3f} "
                     f"| {r['lo']:.3f}–{r['hi']:.3f} | {r['base_faults']:.0f} | {r['new_faults']:.0f} |")
    return "\n".join(lines)


def _plan(rounds: int | None, steps: int | None, quick: bool) -> tuple[int, int]:
    return rounds or (2 if quick else 5), steps or (3 if quick else 6)


def report(rev_a: str, rev_b: str | None, models=MODELS, modes=MODES, *, heaps=tuple(HEAPS), rounds: int | None = None,
           steps: int | None = None, quick: bool = False, threads: int | None = None, raw: dict | None = None) -> str:
    """Markdown: the A / B table, measured now (``raw``, if given, receives every process's result)."""
    rounds, steps = _plan(rounds, steps, quick)
    trees = {"A": resolve(rev_a), "B": resolve(rev_b)}
    runs = measure(trees, tuple(heaps), [(m, mode) for m in models for mode in modes], rounds, steps, quick, threads)
    if raw is not None:
        raw["ab"] = [dict(model=k[0], mode=k[1], runs={f"{s} {h}": v for (s, h), v in sides.items()})
                     for k, sides in runs.items()]
    return ab_table(runs, trees["A"], trees["B"], tuple(heaps), rounds, steps, quick)


def heap_report(rev: str | None = None, models=MODELS, modes=MODES, *, rounds: int | None = None,
                steps: int | None = None, quick: bool = False, threads: int | None = None) -> str:
    """Markdown: one tree's steps under glibc's defaults and under :data:`HEAP_ENV`, measured now."""
    rounds, steps = _plan(rounds, steps, quick)
    tree = resolve(rev)
    runs = measure({"A": tree}, tuple(HEAPS), [(m, mode) for m in models for mode in modes], rounds, steps, quick,
                   threads)
    return heap_table(runs, tree, rounds, steps, quick)


def _csv(choices):
    def parse(s: str) -> tuple[str, ...]:
        items = tuple(x for x in s.split(",") if x)
        bad = [x for x in items if x not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"choose from {','.join(choices)}, got {s!r}")
        return items
    return parse


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("rev_a", metavar="REV_A", help="git revision or built tree directory ('.': this checkout)")
    p.add_argument("rev_b", metavar="REV_B", help="git revision or built tree directory ('.': this checkout)")
    p.add_argument("workloads", metavar="WORKLOADS", nargs="?", type=_csv(MODELS), default=MODELS,
                   help=f"comma-separated subset of {','.join(MODELS)} (default: all)")
    p.add_argument("--modes", type=_csv(MODES), default=MODES, help="comma-separated (default: both)")
    p.add_argument("--heaps", type=_csv(tuple(HEAPS)), default=tuple(HEAPS),
                   help="comma-separated heap settings of every side (default: defaults,malloc)")
    p.add_argument("--rounds", type=int, default=None, help="alternating rounds (default 5; 2 with --quick)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per process (default 6; 3 with --quick)")
    p.add_argument("--quick", action="store_true", help="the QUICK configs, fewer rounds and steps")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads in the workers")
    p.add_argument("--json", help="also write every process's result to this file")
    args = p.parse_args(argv)
    raw: dict = {}
    print(report(args.rev_a, args.rev_b, args.workloads, args.modes, heaps=args.heaps, rounds=args.rounds,
                 steps=args.steps, quick=args.quick, threads=args.threads, raw=raw))
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=1))


if __name__ == "__main__":
    main()
