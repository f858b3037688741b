"""`flowkern demo --quick` end to end (files + lower quick-run thresholds) and expert caching."""

from __future__ import annotations

import json
import re

import pytest
import torch

from flowkern import heap
from flowkern.cli import main
from flowkern.experts import train_autoencoder, train_classifier

PICTURES = ("iin_swap_digit.png", "iin_swap_colour.png", "iin_interp_digit.png", "iin_interp_colour.png",
            "sketch_examples.png", "sketch_thickness_swap.png", "invariance_samples.png",
            "net2net_class_samples.png")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    before = torch.get_num_threads()
    try:
        assert main(["demo", "--out", str(out), "--quick", "--no-text"]) == 0
    finally:
        torch.set_num_threads(before)
    return out, json.loads((out / "metrics.json").read_text())


def test_quick_run_writes_pictures_and_report(quick_run):
    out, m = quick_run
    for name in PICTURES:
        assert (out / name).stat().st_size > 500, name
    report = (out / "report.md").read_text()
    embedded = set(re.findall(r"\]\(([^)]+\.png)\)", report))
    assert set(PICTURES) <= embedded
    assert m["text"] == {"skipped": "--no-text"}
    assert sorted(p.suffix for p in (out / "experts").iterdir()) == [".pt", ".pt"]
    assert m["timings_s"]["total"] > 0
    assert m["config"]["heap"] == ("keep_freed_memory" if heap._glibc() is not None else "glibc defaults")


def test_quick_run_metrics_above_quick_thresholds(quick_run):
    _, m = quick_run
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
