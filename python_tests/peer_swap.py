"""Run a peer library's own test suite with flowkern's adapters swapped in for its classes.

Used as a pytest plugin in a subprocess (``python -m pytest -p python_tests.peer_swap ...``) by
``test_peer_suites.py``. With ``FLOWKERN_PEER_SWAP=<peer>`` it imports every module of the peer
package and replaces, in each of them, every reference to one of the peer classes named in
:data:`SWAPS` by flowkern's adapter of the same name: the same class object everywhere the
peer's own modules refer to it (``normflows.flows.ActNorm``, ``normflows.flows.affine.glow.ActNorm``,
``normflows.flows.normalization.ActNorm`` ...), never a namesake that is another class
(``normflows.utils.nn.ActNorm``). Test modules are collected after the swap, so their
``from normflows.flows import MaskedAffineFlow`` binds the adapter too. Without the variable the
suite runs untouched (the baseline).

Every test is seeded (torch, numpy, random: 0) before it runs, in both modes, so a test's
outcome does not depend on the order or on what ran before it. ``FLOWKERN_PEER_REPORT=<path>``
receives a JSON report: per test node id its outcome ('passed', 'failed', 'skipped'), its
subtest counts and (swap mode) how many adapter instances it built, and the swap table
(class -> module attributes replaced).
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import random
import sys
from collections import defaultdict

import numpy as np
import torch

# peer -> (flowkern adapter module, {adapter class name: the peer's public path of that class})
SWAPS: dict[str, tuple[str, dict[str, str]]] = {
    "normflows": ("flowkern.compat.normflows", {
        "AffineConstFlow": "normflows.flows.AffineConstFlow",
        "ActNorm": "normflows.flows.ActNorm",
        "Split": "normflows.flows.Split",
        "Merge": "normflows.flows.Merge",
        "AffineCoupling": "normflows.flows.AffineCoupling",
        "AffineCouplingBlock": "normflows.flows.AffineCouplingBlock",
        "MaskedAffineFlow": "normflows.flows.MaskedAffineFlow",
        "Permute": "normflows.flows.Permute",
        "Invertible1x1Conv": "normflows.flows.Invertible1x1Conv",
        "NormalizingFlow": "normflows.NormalizingFlow",
    }),
    "nflows": ("flowkern.compat.nflows", {
        "CompositeTransform": "nflows.transforms.CompositeTransform",
        "ActNorm": "nflows.transforms.ActNorm",
        "AffineCouplingTransform": "nflows.transforms.AffineCouplingTransform",
        "Permutation": "nflows.transforms.Permutation",
        "RandomPermutation": "nflows.transforms.RandomPermutation",
        "ReversePermutation": "nflows.transforms.ReversePermutation",
    }),
}


def _resolve(path: str) -> type:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _peer_modules(peer: str) -> list:
    """Every importable module of the peer package (its ``*_test`` modules excluded)."""
    package = importlib.import_module(peer)
    for info in pkgutil.walk_packages(package.__path__, prefix=f"{peer}."):
        if not info.name.rsplit(".", 1)[-1].endswith("_test"):
            importlib.import_module(info.name)
    return [m for name, m in list(sys.modules.items())
            if m is not None and (name == peer or name.startswith(peer + "."))]


def swap(peer: str) -> dict[str, list[str]]:
    """Replace the peer's classes of :data:`SWAPS` by flowkern's adapters in all the peer's
    modules; returns ``{class name: ["module.attribute", ...] replaced}``."""
    adapter_module, paths = SWAPS[peer]
    adapters = importlib.import_module(adapter_module)
    originals = {_resolve(path): getattr(adapters, name) for name, path in paths.items()}
    for original, adapter in originals.items():
        if original is adapter or original.__module__.split(".")[0] != peer:
            raise RuntimeError(f"{original!r} is not a {peer} class to swap")
    for adapter in set(originals.values()):
        _count_instances(adapter)
    replaced: dict[str, list[str]] = defaultdict(list)
    for module in _peer_modules(peer):
        for attr, value in list(vars(module).items()):
            if isinstance(value, type) and value in originals:
                setattr(module, attr, originals[value])
                replaced[value.__name__].append(f"{module.__name__}.{attr}")
    return dict(replaced)


_BUILT: list[int] = [0]  # adapter instances built so far (swap mode)


def _count_instances(cls: type) -> None:
    """Count the instances of ``cls`` built, so the report tells which tests ran an adapter."""
    init = cls.__dict__.get("__init__")
    if init is None or getattr(init, "_flowkern_counted", False):
        return

    def counted_init(self, *args, **kwargs):
        _BUILT[0] += 1
        init(self, *args, **kwargs)

    counted_init._flowkern_counted = True
    cls.__init__ = counted_init


_RESULTS: dict[str, dict] = {}
_SWAPPED: dict[str, list[str]] = {}


def pytest_configure(config) -> None:
    peer = os.environ.get("FLOWKERN_PEER_SWAP")
    if peer:
        _SWAPPED.update(swap(peer))


def pytest_runtest_setup(item) -> None:
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    item._flowkern_built_before = _BUILT[0]


def pytest_runtest_teardown(item, nextitem) -> None:
    entry = _RESULTS.setdefault(item.nodeid, {"outcome": "passed", "subtests_passed": 0, "subtests_failed": 0})
    entry["adapters_built"] = _BUILT[0] - getattr(item, "_flowkern_built_before", _BUILT[0])


def pytest_runtest_logreport(report) -> None:
    entry = _RESULTS.setdefault(report.nodeid, {"outcome": "passed", "subtests_passed": 0, "subtests_failed": 0})
    if getattr(report, "context", None) is not None:  # a subtest's report
        if report.failed:
            entry["subtests_failed"] += 1
            entry["outcome"] = "failed"
        elif report.passed:
            entry["subtests_passed"] += 1
        return
    if report.failed:
        entry["outcome"] = "failed"
    elif report.skipped and entry["outcome"] == "passed":
        entry["outcome"] = "skipped"


def pytest_collectreport(report) -> None:
    if report.failed:  # an import error in a test module
        _RESULTS[report.nodeid or "<collection>"] = {"outcome": "error", "subtests_passed": 0,
                                                     "subtests_failed": 0}


def pytest_sessionfinish(session, exitstatus) -> None:
    path = os.environ.get("FLOWKERN_PEER_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump({"tests": _RESULTS, "swapped": _SWAPPED}, f, indent=1, sort_keys=True)
