"""The interpretation example end to end, run as ``make demo`` runs it (``examples/interpretation/run.py
--quick`` with the Makefile's glibc variables): files, stages, the quick-run thresholds; expert
caching; and the demo's absence from the ``flowkern`` package."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest
import torch

from flowkern.cli import main as cli_main

from .interpretation_example import EXAMPLE_DIR, RUN_SCRIPT

from experts import train_autoencoder, train_classifier  # noqa: E402
from run import IMAGE_SCRIPT, IMAGE_SIZES, MALLOC_ENV  # noqa: E402

REPO = EXAMPLE_DIR.parents[1]
PICTURES = ("iin_swap_digit.png", "iin_swap_colour.png", "iin_interp_digit.png", "iin_interp_colour.png",
            "sketch_examples.png", "sketch_thickness_swap.png", "invariance_samples.png",
            "net2net_class_samples.png")
STAGES = ("data", "experts", "iin", "sketch", "invariances", "net2net_logits")


def demo_recipe_env() -> dict[str, str]:
    """The ``VAR=value`` assignments that prefix the command of ``make demo`` (as make expands them)."""
    dry = subprocess.run(["make", "-n", "-s", "demo"], cwd=REPO, capture_output=True, text=True, timeout=60)
    lines = [ln for ln in dry.stdout.splitlines() if "examples/interpretation/run.py" in ln]
    assert len(lines) == 1, f"make -n demo runs examples/interpretation/run.py once:\n{dry.stdout}{dry.stderr}"
    return dict(re.findall(r"(\w+)=(\S+)\s", lines[0].split("examples/interpretation/run.py")[0]))


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    env = {k: v for k, v in os.environ.items() if k not in MALLOC_ENV}
    env.update(demo_recipe_env())
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    done = subprocess.run([sys.executable, str(RUN_SCRIPT), "--out", str(out), "--quick", "--no-text"],
                          env=env, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stderr[-4000:]
    return out, json.loads((out / "metrics.json").read_text()), done.stdout


def test_make_demo_sets_glibc_heap_variables_the_run_records(quick_run):
    """glibc ignores an mmap threshold above 32 MiB (HEAP_MAX_SIZE / 2 on 64-bit) without a word."""
    _, m, _ = quick_run
    env = demo_recipe_env()
    assert set(env) == {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"}
    assert 0 < int(env["MALLOC_MMAP_THRESHOLD_"]) <= 32 << 20
    assert int(env["MALLOC_TRIM_THRESHOLD_"]) >= 2 * int(env["MALLOC_MMAP_THRESHOLD_"])
    assert m["config"]["malloc_env"] == env


def test_make_demo_ends_with_the_image_stage_at_its_demo_size():
    """``make demo`` passes ``--image demo``: ``examples/image/glow_photos.py --demo`` (``flowkern
    train`` on the bundled photographs; python_tests/test_image_example.py runs it at --quick)."""
    dry = subprocess.run(["make", "-n", "-s", "demo"], cwd=REPO, capture_output=True, text=True, timeout=60)
    line = next(ln for ln in dry.stdout.splitlines() if "examples/interpretation/run.py" in ln)
    assert re.search(r"--image demo\b", line)
    assert IMAGE_SIZES["demo"] == ["--demo"] and IMAGE_SCRIPT.is_file()


def test_quick_run_writes_pictures_and_report(quick_run):
    out, m, stdout = quick_run
    for name in PICTURES:
        assert (out / name).stat().st_size > 500, name
    report = (out / "report.md").read_text()
    embedded = set(re.findall(r"\]\(([^)]+\.png)\)", report))
    assert set(PICTURES) <= embedded
    assert m["text"] == {"skipped": "--no-text"}
    assert sorted(p.suffix for p in (out / "experts").iterdir()) == [".pt", ".pt"]
    assert list(m["timings_s"]) == [*STAGES, "total"] and m["timings_s"]["total"] > 0
    announced = re.findall(r"^\[demo\] (\w+) \.\.\.$", stdout, re.M)
    assert announced == list(STAGES)


def test_quick_run_metrics_above_quick_thresholds(quick_run):
    _, m, _ = quick_run
    iin = m["iin"]
    assert m["experts"]["classifier_test_acc"] > 0.7
    assert m["experts"]["colour_judge_test_acc"] > 0.95
    assert iin["probes"]["colour"]["colour"] > 0.8
    assert iin["probes"]["digit"]["digit"] > 0.2  # chance: 0.1
    assert iin["probes"]["digit"]["colour"] < 0.6  # colour mostly not in the digit factor
    assert iin["probes_knn"]["colour"]["colour"] > 0.8
    assert iin["probes_knn"]["digit"]["digit"] > 0.2
    assert iin["probes_mlp"]["colour"]["colour"] > 0.8
    assert iin["probes_mlp"]["digit"]["digit"] > 0.2
    assert iin["probes_mlp"]["digit"]["colour"] < 0.9  # 250 quick IIN steps leave nonlinear colour traces
    assert 0 < m["experts"]["digit_knn_probe_on_ae_latent"] <= 1
    assert 0.2 < m["experts"]["digit_mlp_probe_on_ae_latent"] <= 1
    assert iin["swap"]["colour"]["target_attribute_taken"] > 0.3
    assert iin["swap"]["digit"]["other_attribute_kept"] > 0.5
    assert iin["roundtrip_max_abs_err"] < 1e-3
    assert m["invariances"]["class_retention"] > 0.3
    assert m["net2net_logits"]["class_conditional_acc"] > 0.3
    sizes = m["factor_size_estimate_ae"]["sizes"]
    assert sum(sizes.values()) == m["config"]["latent_dim"]


def test_experts_are_cached(tmp_path):
    torch.manual_seed(0)
    x = torch.rand(64, 3, 16, 16)
    y = torch.randint(10, (64,))
    ae = train_autoencoder(x, latent_dim=8, epochs=1, cache=tmp_path / "ae.pt")
    again = train_autoencoder(x, latent_dim=8, epochs=1, seed=5, cache=tmp_path / "ae.pt")
    for a, b in zip(ae.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    clf = train_classifier(x, y, epochs=1, cache=tmp_path / "clf.pt")
    clf2 = train_classifier(x, y, epochs=1, seed=3, cache=tmp_path / "clf.pt")
    assert torch.equal(clf.predict(x), clf2.predict(x))


def test_the_demo_is_not_part_of_the_package(capsys):
    for name in ("flowkern.demo", "flowkern.data", "flowkern.experts", "flowkern.viz"):
        spec = importlib.util.find_spec(name)
        # origin None: a namespace package, i.e. a leftover __pycache__ folder of an old checkout
        assert spec is None or spec.origin is None, name
    with pytest.raises(SystemExit):
        cli_main(["demo", "--quick"])
    assert "invalid choice: 'demo'" in capsys.readouterr().err
