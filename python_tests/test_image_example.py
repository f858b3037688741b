"""examples/image/glow_photos.py --quick: every stage runs offline on the bundled photographs and
writes its metrics, report and pictures; flowkern and normflows agree; the memory-saving step
saves only the latents and the loss falls."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "image" / "glow_photos.py"

pytest.importorskip("normflows")
pytest.importorskip("sklearn")
PIL = pytest.importorskip("PIL.Image")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("glow_photos")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--quick"], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, json.loads((out / "metrics.json").read_text()), proc.stdout


def test_quick_run_writes_metrics_report_and_pictures(quick_run):
    out, m, stdout = quick_run
    assert "test bits/dim: flowkern" in stdout
    for name in ("samples.png", "sample_large.png"):
        with PIL.open(out / name) as img:
            assert img.size[0] > 0 and img.mode == "RGB"
    report = (out / "report.md").read_text()
    assert "![samples](samples.png)" in report and "memory-saving" in report
    assert m["data"]["test_columns"][0] == m["data"]["train_columns"][1]  # held-out region


def test_quick_run_flowkern_and_normflows_agree(quick_run):
    _, m, _ = quick_run
    t = m["test_bpd"]
    assert t["agree_within_noise"]
    assert abs(t["difference"]) <= 2 * t["se_test"]
    assert t["flowkern"] < t["initial"] and t["normflows"] < t["initial"]  # both learned
    assert 0 < t["flowkern"] < 9


def test_quick_run_memory_saving_stage(quick_run):
    _, m, _ = quick_run
    lg = m["large"]
    assert lg["loss_fell"] and lg["bits_per_dim_per_step"][-1] < lg["bits_per_dim_per_step"][0]
    labels = lg["batch"] * 8  # the int64 class labels, saved as the condition
    assert lg["flowkern_saved_bytes"] == lg["flowkern_latent_bytes"] + labels
    assert lg["normflows_saved_bytes_needed"] > 10 * lg["flowkern_saved_bytes"]
