"""The peers' own test suites, run with flowkern's adapters swapped in for the peers' classes.

* normflows 1.7.3: every ``*_test.py`` its wheel installs (all 22 files, 52 tests).
* nflows 0.14: the whole ``tests/`` tree of its PyPI source distribution (137 tests), extracted
  from ``$(VENV)/peer_sdists/nflows-0.14.tar.gz``, which ``make setup`` downloads with
  ``pip download --no-binary :all: --no-deps nflows==0.14`` (nothing is downloaded here). Its
  tests import ``torchtestcase``, which ``make setup`` installs.

Each suite runs in a subprocess with the ``python_tests.peer_swap`` plugin, which replaces the
peer's classes by flowkern's adapters in every module of the peer (see its docstring). The
contract: every test that passes with the peer passes with the swap. A test failing under the
swap is run again without it and must fail there too (6 of nflows' ``NaiveLinearTest`` tests
fail with the peer itself on this torch: ``torch.qr`` was removed). The number of passing tests
and of tests that built an adapter are checked against the counts measured when this was
written, so a suite that silently collects nothing, or a swap that replaces nothing, fails.

The source distribution (or ``torchtestcase``) missing: the nflows suite is skipped with the
reason, except under ``CI=true``, where it fails. Cost: about 15 s per suite on 2 cores.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() == "true"
NFLOWS_SDIST = "nflows-0.14.tar.gz"

# Measured with normflows 1.7.3 / nflows 0.14 on torch 2.14 (see flowkern/compat/README.md):
# (tests passing with the peer itself, tests passing with the swap, tests that built an adapter).
EXPECTED = {"normflows": (52, 52, 11), "nflows": (131, 131, 36)}


def _sdist_dirs() -> list[Path]:
    """Where ``make setup`` puts the peers' source distributions: ``$(VENV)/peer_sdists``
    (``sys.prefix`` is the venv running the tests), or ``FLOWKERN_PEER_SDISTS``."""
    dirs = [Path(os.environ["FLOWKERN_PEER_SDISTS"])] if os.environ.get("FLOWKERN_PEER_SDISTS") else []
    dirs += [Path(sys.prefix) / "peer_sdists", REPO / ".venv" / "peer_sdists"]
    return list(dict.fromkeys(d.resolve() for d in dirs))


def _require(ok: bool, reason: str) -> None:
    """Skip with ``reason`` outside CI; fail under ``CI=true``, where the suites must run."""
    if ok:
        return
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: the peer suites must run; `make setup` fetches it)")
    pytest.skip(reason)


def _run(peer: str, root: Path, args: list[str], swap: bool, tmp_path: Path, tag: str) -> dict:
    """Run pytest on ``args`` (relative to ``root``) in a subprocess; the plugin's JSON report."""
    ini = tmp_path / "pytest.ini"
    ini.write_text("[pytest]\n")
    report = tmp_path / f"{peer}-{tag}.json"
    env = {k: v for k, v in os.environ.items() if k not in ("FLOWKERN_PEER_SWAP", "PYTEST_ADDOPTS")}
    env.update(PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               FLOWKERN_PEER_REPORT=str(report), PYTHONDONTWRITEBYTECODE="1")
    if swap:
        env["FLOWKERN_PEER_SWAP"] = peer
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "python_tests.peer_swap", "-p", "no:cacheprovider",
           "-c", str(ini), "--rootdir", str(root), "--confcutdir", str(root), *args]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    if not report.exists():
        raise AssertionError(f"the {peer} suite did not run (exit {proc.returncode}):\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    data = json.loads(report.read_text())
    data["output"] = proc.stdout[-6000:]
    return data


def _passed(tests: dict) -> set[str]:
    return {node for node, r in tests.items() if r["outcome"] == "passed"}


def _check_suite(peer: str, root: Path, args: list[str], tmp_path: Path) -> None:
    swapped = _run(peer, root, args, swap=True, tmp_path=tmp_path, tag="swapped")
    tests = swapped["tests"]
    adapters = importlib.import_module(f"flowkern.compat.{peer}")
    from .peer_swap import SWAPS

    for name in SWAPS[peer][1]:  # every adapter replaced the peer's class somewhere
        assert swapped["swapped"].get(name), f"{peer}.{name} was not swapped in"
        assert getattr(adapters, name) is not None
    failing = sorted(set(tests) - _passed(tests))
    passing_with_peer = set()
    if failing:  # these must fail with the peer itself too
        baseline = _run(peer, root, [f for f in failing if "::" in f or f.endswith(".py")], swap=False,
                        tmp_path=tmp_path, tag="baseline")
        passing_with_peer = _passed(baseline["tests"]) & set(failing)
    assert not passing_with_peer, (
        f"{len(passing_with_peer)} {peer} tests pass with {peer} but fail with flowkern swapped in: "
        f"{sorted(passing_with_peer)}\n{swapped['output']}")
    n_peer, n_swapped, n_built = EXPECTED[peer]
    built = sum(1 for r in tests.values() if r.get("adapters_built", 0) > 0)
    assert len(_passed(tests)) >= n_swapped, f"{len(_passed(tests))} passed, expected {n_swapped}\n{swapped['output']}"
    assert built >= n_built, f"only {built} {peer} tests built a flowkern adapter (expected {n_built})"


def test_normflows_suite_passes_with_flowkern_swapped_in(tmp_path):
    spec = importlib.util.find_spec("normflows")
    root = Path(spec.origin).parent
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*_test.py"))
    assert len(files) >= 20, files
    _check_suite("normflows", root, files, tmp_path)


def test_nflows_sdist_suite_passes_with_flowkern_swapped_in(tmp_path):
    sdist = next((d / NFLOWS_SDIST for d in _sdist_dirs() if (d / NFLOWS_SDIST).is_file()), None)
    _require(sdist is not None, f"{NFLOWS_SDIST} not found in {[str(d) for d in _sdist_dirs()]}")
    _require(importlib.util.find_spec("torchtestcase") is not None,
             "torchtestcase (imported by nflows' tests) is not installed")
    with tarfile.open(sdist) as tar:  # only tests/: the sdist's nflows/ must not shadow the installed one
        members = [m for m in tar.getmembers() if m.name.startswith("nflows-0.14/tests/") and m.isfile()]
        tar.extractall(tmp_path, members=members, filter="data")
    root = tmp_path / "nflows-0.14"
    assert not (root / "nflows").exists()
    _check_suite("nflows", root, ["tests"], tmp_path)


def test_swap_replaces_the_peers_class_objects_not_namesakes():
    """In a subprocess: after the swap, every public path and internal reference of a swapped
    class is the adapter, and a namesake that is another class (normflows.utils.nn.ActNorm)
    is untouched."""
    code = (
        "import normflows, normflows.utils.nn as unn, normflows.flows.affine.glow as glow\n"
        "namesake = unn.ActNorm\n"
        "from python_tests.peer_swap import swap\n"
        "import flowkern.compat.normflows as K\n"
        "table = swap('normflows')\n"
        "assert normflows.flows.ActNorm is K.ActNorm and glow.ActNorm is K.ActNorm\n"
        "assert normflows.flows.normalization.ActNorm is K.ActNorm\n"
        "assert glow.AffineCouplingBlock is K.AffineCouplingBlock and normflows.NormalizingFlow is K.NormalizingFlow\n"
        "assert unn.ActNorm is namesake and namesake is not K.ActNorm\n"
        "assert 'normflows.utils.nn.ActNorm' not in table['ActNorm'], table['ActNorm']\n"
        "print(len(table))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert int(proc.stdout.split()[-1]) == 10
