"""examples/image/glow_photos.py --quick, run as ``make demo`` runs its image stage (``run.py``'s
``image_stage``, in a subprocess): it builds an image folder
from the bundled photographs (nothing downloaded), trains through ``flowkern train`` (val bits/dim,
the sample grid), measures the standard and the memory-saving mode's peak memory in ``flowkern
train`` processes, compares normflows' Glow with its conversion, and the demo's report renders it."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from . import interpretation_example  # noqa: F401  (puts examples/interpretation on sys.path)

from report import image_section  # noqa: E402
from run import IMAGE_SCRIPT, image_stage  # noqa: E402

SCRIPT = Path(IMAGE_SCRIPT)

pytest.importorskip("normflows")
pytest.importorskip("sklearn")
pytest.importorskip("skimage")
PIL = pytest.importorskip("PIL.Image")

sys.path.insert(0, str(SCRIPT.parent))
from glow_photos import unaffordable_batch  # noqa: E402


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "image"
    m = image_stage(out, "quick")
    assert m["dir"] == "image" and m["size"] == "quick" and m["config"]["quick"]
    return out, m


def test_the_folder_is_cut_from_bundled_photographs(quick_run):
    out, m = quick_run
    photos = m["data"]["photos"]
    assert set(photos) == {"astronaut", "coffee", "chelsea", "rocket", "china", "flower"}
    for name, counts in photos.items():
        assert counts["train"] > 0 and counts["val"] > 0, name
        assert len(list((out / "photos" / "train" / name).glob("*.png"))) == counts["train"]
        assert len(list((out / "photos" / "val" / name).glob("*.png"))) == counts["val"]
    size = m["config"]["size"]
    with PIL.open(next((out / "photos" / "val" / "china").iterdir())) as img:
        assert img.size == (size, size) and img.mode == "RGB"
    assert m["data"]["large_files"] and all(f.endswith(".jpg") for f in m["data"]["large_files"])


def test_training_runs_through_the_command_line(quick_run):
    out, m = quick_run
    tr = m["train"]
    assert tr["command"].startswith("flowkern train photos --out train --conditional")
    log = (out / "train.log").read_text()
    assert log.startswith("$ flowkern train ") and "6 classes" in log
    assert tr["final_line"].startswith("final val bits/dim")
    assert float(tr["final_line"].split()[-1]) == pytest.approx(tr["val_bits_per_dim"], abs=1e-5)
    assert tr["val_images"] == m["data"]["val_files"]
    assert 0 < tr["val_bits_per_dim"] < 8.5
    assert tr["train_bits_per_dim_last10"] < tr["train_bits_per_dim_first"]  # it learned
    assert sorted(p.name for p in (out / "train").glob("step-*.pt")) == [f"step-{m['config']['steps']:08d}.pt"]
    with PIL.open(out / "samples.png") as img:
        assert img.mode == "RGB" and min(img.size) > 4 * m["config"]["size"]


def test_memory_stage_measures_both_modes(quick_run):
    _, m = quick_run
    mem = m["memory"]
    (s0, s1), (m0, mr) = mem["standard"], mem["memory_saving"]
    assert [s0["batch"], s1["batch"], m0["batch"], mr["batch"]] == [2, 6, 2, 6]
    assert [r["memory_saving"] for r in (s0, s1, m0, mr)] == [False, False, True, True]
    assert all(r["peak_rss_bytes"] > 100 * 2 ** 20 for r in (s0, s1, m0, mr))  # a whole process: torch and all
    assert mem["standard_bytes_per_image"] > 0
    assert mr["peak_rss_bytes"] < s1["peak_rss_bytes"]  # same batch, the memory-saving mode holds less
    assert mem["standard_unaffordable_from_batch"] > mr["batch"] and mem["standard_affordable_at_run_batch"]
    # the same weights and batch: the same forward at step 1, the same update to float32 rounding at step 2
    assert mem["first_step_difference"] == pytest.approx(0, abs=1e-5)
    assert mem["second_step_difference"] == pytest.approx(0, abs=1e-2)


def test_unaffordable_batch_is_the_first_over_the_budget():
    per_image, batch = unaffordable_batch({1: 900.0, 3: 1100.0}, budget=2000.0)
    assert per_image == 100.0 and batch == 13  # batch 12: 900 + 11 x 100 = 2000 fits; 13 does not
    assert unaffordable_batch({2: 50.0, 1: 40.0}, budget=45.0) == (10.0, 2)  # a measured batch already over
    assert unaffordable_batch({2: 50.0, 1: 40.0}, budget=10.0) == (10.0, 1)
    with pytest.raises(ValueError, match="does not grow"):
        unaffordable_batch({1: 900.0, 3: 900.0}, budget=2000.0)


def test_normflows_and_its_conversion_agree(quick_run):
    _, m = quick_run
    nf = m["normflows"]
    assert nf["agree_within_noise"] and abs(nf["difference"]) <= 2 * nf["se_test"]
    assert nf["flowkern"] < nf["initial"] and nf["normflows"] < nf["initial"]  # both learned
    assert nf["test_columns"][0] == nf["train_columns"][1]  # held-out region


def test_reports_embed_the_numbers_and_the_grid(quick_run):
    out, m = quick_run
    report = (out / "report.md").read_text()
    assert "![samples](samples.png)" in report and f"**{m['train']['val_bits_per_dim']:.4f}**" in report
    assert report.count("| memory-saving, chunk 1 |") == 2 and report.count("| standard |") == 2
    section = "\n".join(image_section(m))
    assert "![glow samples](image/samples.png)" in section
    runs = (*m["memory"]["standard"], *m["memory"]["memory_saving"])
    gib = [f"{r['peak_rss_bytes'] / 2 ** 30:.2f} GiB" for r in runs]
    assert all(g in section for g in gib) and "agree within noise" in section
    assert re.search(r"val bits/dim after \d+ steps: \*\*\d\.\d{4}\*\*", section)
