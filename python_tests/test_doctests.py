"""The public API's docstring examples (``>>>``) run as doctests, one test per module.

Every module under :data:`PACKAGES` is found by walking the packages (a new module, or a new
example in an existing one, is picked up without touching this file). An example runs with its
module's globals, after ``torch.manual_seed(0)``, with ``ELLIPSIS`` and ``NORMALIZE_WHITESPACE``;
a module without examples is skipped, saying so.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest
import torch

PACKAGES = ("flowkern.nn", "flowkern.ops", "flowkern.check", "flowkern.compat")
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def public_modules() -> list[str]:
    """Every module of :data:`PACKAGES`, the packages themselves included, sorted by name."""
    names = set()
    for pkg in PACKAGES:
        module = importlib.import_module(pkg)
        names.add(pkg)
        for info in pkgutil.walk_packages(getattr(module, "__path__", []), pkg + "."):
            names.add(info.name)
    return sorted(names)


MODULES = public_modules()


def run_examples(module_name: str) -> tuple[int, int, str]:
    """(examples tried, failed, doctest's report) for the docstrings defined in ``module_name``."""
    module = importlib.import_module(module_name)
    tests = [t for t in doctest.DocTestFinder(exclude_empty=True).find(module, module_name) if t.examples]
    report: list[str] = []
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in sorted(tests, key=lambda t: t.name):
        torch.manual_seed(0)
        runner.run(test, out=report.append, clear_globs=True)
    return runner.tries, runner.failures, "".join(report)


def test_discovery_walks_every_package():
    for name in ("flowkern.nn", "flowkern.nn.actnorm", "flowkern.ops.coupling", "flowkern.check",
                 "flowkern.compat.freia", "flowkern.compat.normflows", "flowkern.compat.nflows"):
        assert name in MODULES, f"{name} not among the doctest modules"
    assert not [m for m in MODULES if not m.startswith(PACKAGES)]


def test_a_failing_example_fails(tmp_path, monkeypatch):
    """The runner reports a wrong expected output (so a green run means the examples ran)."""
    (tmp_path / "doctest_probe_module.py").write_text('def f():\n    """\n    >>> 1 + 1\n    3\n    """\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    tries, failures, report = run_examples("doctest_probe_module")
    assert (tries, failures) == (1, 1) and "Expected:\n    3\nGot:\n    2" in report


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples(module_name):
    tries, failures, report = run_examples(module_name)
    if tries == 0:
        pytest.skip(f"{module_name} has no docstring examples")
    assert failures == 0, f"{failures} of {tries} examples in {module_name} failed:\n{report}"
