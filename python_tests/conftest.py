"""Shared fixtures for the flowkern test suite (helpers live in helpers.py), and the GPU run's
``--require-gpu`` option.

GPU tests carry the ``gpu`` marker, given explicitly or here at collection to any test that
  * has a ``skipif`` mark whose reason says CUDA, a GPU or Triton is missing ("needs a CUDA GPU",
    "no CUDA GPU is visible", "triton is not installed", ...), or
  * is parametrized with ``"cuda"`` or a CUDA device,
so ``pytest -m gpu`` selects them everywhere. ``--require-gpu`` (``scripts/gpu_check.sh``): on a
machine where ``torch.cuda.is_available()``, a skipped ``gpu`` test, and any test or module skipped
because CUDA, a GPU, Triton or the compiled extension is missing, is reported as a failure instead;
without a GPU the option is a usage error (except with ``--collect-only``).
"""

from __future__ import annotations

import os
import re

import pytest
import torch

from .helpers import SCALES

# Keep CPU tests quick and repeatable on the 2-core CI machine.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(params=SCALES)
def scale(request):
    return request.param


# ---- GPU tests: the gpu marker and --require-gpu ------------------------------------------
_GPU = re.compile(r"\b(cuda|gpus?|triton|nvcc)\b", re.I)
_EXTENSION = re.compile(r"\bextension\b", re.I)
_MISSING = re.compile(r"\b(needs?|requires?|required|no|without|unavailable|not (available|installed|built|"
                      r"compiled|found|visible)|missing|is false)\b", re.I)


def lacks_gpu(reason: str, extension: bool = False) -> bool:
    """Whether a skip reason says CUDA, a GPU or Triton is missing (``extension``: or the compiled
    extension, which the GPU run has built)."""
    needed = _GPU.search(reason) or (extension and _EXTENSION.search(reason))
    return bool(needed and _MISSING.search(reason))


def _is_cuda(value: object) -> bool:
    if isinstance(value, torch.device):
        return value.type == "cuda"
    return isinstance(value, str) and (value == "cuda" or value.startswith("cuda:"))


def pytest_addoption(parser):
    parser.addoption("--require-gpu", action="store_true", default=False,
                     help="GPU run: a skipped gpu test, or a test skipped for lack of CUDA / a GPU / Triton / "
                          "the extension, fails; a usage error when torch.cuda.is_available() is False")


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU")
    if config.getoption("require_gpu") and not config.getoption("collectonly") and not torch.cuda.is_available():
        raise pytest.UsageError("--require-gpu: torch.cuda.is_available() is False on this machine "
                                f"(torch {torch.__version__}, built with CUDA {torch.version.cuda})")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            continue
        reasons = [str(m.kwargs.get("reason", m.args[1] if len(m.args) > 1 else ""))
                   for m in item.iter_markers("skipif")]
        params = getattr(getattr(item, "callspec", None), "params", {})
        if any(lacks_gpu(r) for r in reasons) or any(_is_cuda(v) for v in params.values()):
            item.add_marker(pytest.mark.gpu)


def _skip_reason(longrepr) -> str:
    reason = str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return reason.removeprefix("Skipped: ")


def _require_gpu(config) -> bool:
    return config.getoption("require_gpu") and torch.cuda.is_available()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not rep.skipped or hasattr(rep, "wasxfail") or not _require_gpu(item.config):
        return
    reason = _skip_reason(rep.longrepr)
    if item.get_closest_marker("gpu") is not None or lacks_gpu(reason, extension=True):
        rep.outcome = "failed"
        rep.longrepr = f"--require-gpu: skipped on a machine with a CUDA GPU ({reason})"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    rep = outcome.get_result()
    if rep.skipped and _require_gpu(collector.config) and lacks_gpu(reason := _skip_reason(rep.longrepr), True):
        rep.outcome = "failed"
        rep.longrepr = f"--require-gpu: module skipped on a machine with a CUDA GPU ({reason})"
