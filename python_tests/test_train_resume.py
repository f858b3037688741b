"""Nothing lost: a ``flowkern train`` process killed with SIGKILL at a random step and resumed
ends with weights (and optimizer state) bitwise equal to a run never interrupted (CPU); SIGTERM
writes a checkpoint and exits 143, and that run resumes bitwise too. Runs as subprocesses."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from flowkern.train import list_checkpoints, read_checkpoint

from .test_train_data import write_folder

pytest.importorskip("skimage")

ROOT = Path(__file__).resolve().parents[1]
STEPS = 12
ARGS = ["--size", "16", "--levels", "2", "--depth", "1", "--hidden", "16", "--batch", "4", "--workers", "1",
        "--steps", str(STEPS), "--checkpoint-every", "3", "--sample-every", "5", "--sample-n", "4", "--log-every", "1",
        "--no-progress", "--warmup", "2", "--val-fraction", "0.2"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _cmd(data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "flowkern", "train", str(data), "--out", str(out), *ARGS, *extra]


def _train_lines(out: Path) -> int:
    try:
        return (out / "metrics.jsonl").read_text().count('"split": "train"')
    except OSError:
        return 0


def _start_and_signal(data: Path, out: Path, after_steps: int, sig: int, *extra: str) -> subprocess.CompletedProcess:
    """Start a run, send ``sig`` to its whole process group (the DataLoader workers too, as a
    preemption does) once ``after_steps`` train lines are in metrics.jsonl."""
    p = subprocess.Popen(_cmd(data, out, *extra), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    deadline = time.monotonic() + 120
    while _train_lines(out) < after_steps and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(p.pid, sig)
    stdout, stderr = p.communicate(timeout=120)
    return subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr)


def _final(out: Path) -> dict:
    steps = [s for s, _ in list_checkpoints(out)]
    assert steps and steps[-1] == STEPS, steps
    return read_checkpoint(out / f"step-{STEPS:08d}.pt")


def _differences(a: dict, b: dict) -> list[str]:
    diff = [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])]
    for i, s in a["optimizer"]["state"].items():
        diff += [f"optimizer {i} {k}" for k, v in s.items() if not torch.equal(v, b["optimizer"]["state"][i][k])]
    return diff


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    write_folder(root / "data", per_photo=3)
    subprocess.run(_cmd(root / "data", root / "ref"), env=ENV, check=True, capture_output=True)
    return root, _final(root / "ref")


def test_sigkill_at_a_random_step_then_resume_is_bitwise_equal(reference):
    root, ref = reference
    seed = int(time.time())
    kill_after = random.Random(seed).randrange(1, STEPS - 1)
    out = root / f"killed-{seed}"
    killed = _start_and_signal(root / "data", out, kill_after, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-2000:])
    resumed = subprocess.run(_cmd(root / "data", out, "--resume"), env=ENV, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    start = [s for s in resumed.stdout.split("\n") if "resuming from" in s or "from step 0" in s]
    assert start, resumed.stdout
    assert _differences(ref, _final(out)) == [], f"kill after {kill_after} steps (seed {seed}): {start}"
    # the resumed run's metrics hold each step once
    import json
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()
             if '"train"' in x]
    assert steps == list(range(1, STEPS + 1))


def test_sigterm_writes_a_checkpoint_and_resumes_bitwise(reference):
    root, ref = reference
    out = root / "term"
    stopped = _start_and_signal(root / "data", out, 4, signal.SIGTERM)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-2000:]
    assert "stopped by SIGTERM after step" in stopped.stdout
    step = int(stopped.stdout.split("stopped by SIGTERM after step ")[1].split(":")[0])
    assert 4 <= step < STEPS and list_checkpoints(out)[-1][0] == step
    resumed = subprocess.run(_cmd(root / "data", out, "--resume"), env=ENV, capture_output=True, text=True)
    assert resumed.returncode == 0 and f"at step {step}" in resumed.stdout, resumed.stderr[-2000:]
    assert _differences(ref, _final(out)) == []
