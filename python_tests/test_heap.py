"""flowkern.heap: glibc malloc settings. Each behavioural case runs in a fresh interpreter, since
the settings are process-wide and glibc's mmap threshold adapts to what a process has freed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import flowkern.heap as heap

glibc = pytest.mark.skipif(heap._glibc() is None, reason="needs glibc")

# Allocates one 16 MiB tensor in a fresh process and prints whether it lies in the brk heap
# (glibc's default threshold, 128 KiB until larger mmapped blocks are freed, maps it on its own).
_PROBE = """
import sys, torch, flowkern.heap as heap
if sys.argv[1] == "keep":
    assert heap.keep_freed_memory() is True
t = torch.ones(4 << 20)
for line in open("/proc/self/maps"):
    if line.rstrip().endswith("[heap]"):
        lo, hi = (int(v, 16) for v in line.split()[0].split("-"))
        print(lo <= t.data_ptr() < hi)
del t
print(heap.release_freed_memory() in (True, False))
"""


def _probe(mode: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}  # glibc's own defaults
    proc = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


@glibc
def test_default_maps_a_16_mib_block_outside_the_heap():
    assert _probe("default") == ["False", "True"]


@glibc
def test_keep_freed_memory_serves_it_from_the_heap():
    assert _probe("keep") == ["True", "True"]


@pytest.mark.parametrize("kw, name", [
    (dict(trim_threshold=0), "trim_threshold"),
    (dict(trim_threshold=2**31), "trim_threshold"),
    (dict(trim_threshold=True), "trim_threshold"),
    (dict(trim_threshold=1.5e9), "trim_threshold"),
    (dict(mmap_threshold=-1), "mmap_threshold"),
    (dict(mmap_threshold=heap.MMAP_THRESHOLD_MAX + 1), "mmap_threshold"),
])
def test_bad_thresholds_raise_naming_the_argument(kw, name):
    with pytest.raises(ValueError, match=name):
        heap.keep_freed_memory(**kw)


def test_other_c_libraries_change_nothing(monkeypatch):
    monkeypatch.setattr(heap, "_glibc", lambda: None)
    assert heap.keep_freed_memory() is False
    assert heap.release_freed_memory() is False
