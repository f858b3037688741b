"""``torchrun --nproc_per_node 2 -m flowkern train`` on the CPU (gloo): the same global batch
on 2 processes and on 1 gives the same loss curve to float32 rounding (max |delta| <= 1e-5 bits/dim),
metrics and checkpoints come from rank 0 only, and the checkpoint holds both ranks' RNG states.
Runs as subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flowkern.train import list_checkpoints, read_checkpoint

from .test_distributed import _free_port
from .test_train_data import write_folder

pytest.importorskip("skimage")

ROOT = Path(__file__).resolve().parents[1]
STEPS = 8
ARGS = ["--size", "16", "--levels", "2", "--depth", "1", "--hidden", "16", "--batch", "8", "--workers", "1",
        "--steps", str(STEPS), "--checkpoint-every", "100", "--sample-every", "0", "--log-every", "1",
        "--no-progress", "--val-fraction", "0.2"]


def _train_losses(out: Path) -> list[float]:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["bits_per_dim"] for r in rows if r["split"] == "train"]


def test_two_processes_match_one(tmp_path):
    write_folder(tmp_path / "data", per_photo=3)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--nnodes", "1",
                          "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
                          "-m", "flowkern", "train", str(tmp_path / "data"), "--out", str(tmp_path / "two"), *ARGS],
                         env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "2 process(es) on cpu (gloo)" in two.stdout
    assert two.stdout.count("final val bits/dim") == 1                       # printed by rank 0 only
    one = subprocess.run([sys.executable, "-m", "flowkern", "train", str(tmp_path / "data"), "--out",
                          str(tmp_path / "one"), *ARGS], env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = _train_losses(tmp_path / "one"), _train_losses(tmp_path / "two")
    assert len(a) == len(b) == STEPS
    assert max(abs(x - y) for x, y in zip(a, b)) <= 1e-5, (a, b)
    assert [s for s, _ in list_checkpoints(tmp_path / "two")] == [STEPS]
    state = read_checkpoint(tmp_path / "two" / f"step-{STEPS:08d}.pt")
    assert len(state["rng"]) == 2 and state["sampler"]["world_size"] == 2
    assert not state["rng"][0]["torch"].equal(state["rng"][1]["torch"])     # each rank's own stream
