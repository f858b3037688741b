"""``flowkern train`` / ``sample`` / ``eval`` end to end on tiny photo folders, in process:
metrics, sample grids, the printed final bits/dim, checkpoints (atomic, verified, the last K
kept; a corrupt newest one skipped by name; a different run's refused by field)."""

from __future__ import annotations

import json
import re

import pytest
import torch
from PIL import Image

from flowkern.cli import main as cli_main
from flowkern.train import (CheckpointError, TrainError, list_checkpoints, load_trained, read_checkpoint, run,
                            save_checkpoint)

from .test_train_data import tiny, write_folder

pytest.importorskip("skimage")

SMALL = ["--size", "16", "--levels", "2", "--depth", "1", "--hidden", "16", "--batch", "4", "--workers", "0",
         "--no-progress", "--warmup", "1"]


def _last_number(text: str) -> float:
    return float(re.findall(r"[-+]?\d+\.\d+(?:e[-+]?\d+)?", text)[-1])


def test_help_documents_the_scripted_flags(capsys):
    with pytest.raises(SystemExit):
        cli_main(["train", "--help"])
    text = capsys.readouterr().out
    for flag in ("--out", "--size", "--model", "--levels", "--depth", "--hidden", "--batch", "--steps", "--lr",
                 "--seed", "--resume", "--memory-saving", "--checkpoint-every", "--conditional", "--val-fraction",
                 "--skip-bad", "--autocast", "--fit", "--keep", "--sample-every", "--workers", "--clip", "--warmup",
                 "--image-cache"):
        assert re.search(rf"{flag}\b[^\n]*\n?\s+\S", text), f"{flag} undocumented"
    for sub in ("sample", "eval"):
        with pytest.raises(SystemExit):
            cli_main([sub, "--help"])
        assert "CHECKPOINT" in capsys.readouterr().out.upper()


def test_train_sample_eval(tmp_path, capsys):
    data = tmp_path / "data"
    write_folder(data / "train", per_photo=4)
    write_folder(data / "val", per_photo=1, seed=3)
    out = tmp_path / "run"
    assert cli_main(["train", str(data), "--out", str(out), *SMALL, "--steps", "12", "--checkpoint-every", "5",
                     "--keep", "2", "--sample-every", "6", "--sample-n", "9", "--log-every", "1", "--lr", "3e-3"]) == 0
    printed = capsys.readouterr().out
    assert "20 training / 5 val images" in printed and "val/ folder" in printed
    val_bpd = _last_number(printed)
    assert printed.strip().splitlines()[-1].startswith("final val bits/dim (5 images)")
    # checkpoints: every 5 steps and at the end, the last 2 kept
    assert [s for s, _ in list_checkpoints(out)] == [10, 12]
    # metrics: a train line per step, val lines at the checkpoints and at the end
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in lines if r["split"] == "train"]
    assert [r["step"] for r in train] == list(range(1, 13))
    for key in ("bits_per_dim", "step_time_s", "images_per_s", "peak_memory_mib", "data_wait_s", "lr"):
        assert all(r[key] > 0 for r in train), key
    assert sum(r["bits_per_dim"] for r in train[-3:]) < sum(r["bits_per_dim"] for r in train[:3])  # it learns
    val = [r for r in lines if r["split"] == "val"]
    assert [r["step"] for r in val] == [5, 10, 12] and val[-1]["bits_per_dim"] == pytest.approx(val_bpd, abs=1e-5)
    # sample grids every 6 steps: 9 samples of 16 x 16 in a 3 x 3 grid with 2-pixel gaps
    for step in (6, 12):
        with Image.open(out / f"samples-{step:08d}.png") as im:
            assert im.size == (3 * 18 + 2, 3 * 18 + 2) and im.mode == "RGB"
    # flowkern sample
    grid = tmp_path / "grid.png"
    assert cli_main(["sample", str(out), "--n", "4", "--temperature", "0.5", "--out", str(grid)]) == 0
    assert "step 12" in capsys.readouterr().out
    with Image.open(grid) as im:
        assert im.size == (2 * 18 + 2, 2 * 18 + 2)
    # flowkern eval on the val folder: the run's final val bits/dim (same crops, same noise)
    assert cli_main(["eval", str(out / "step-00000012.pt"), str(data / "val"), "--batch", "3", "--workers", "0"]) == 0
    assert _last_number(capsys.readouterr().out) == pytest.approx(val_bpd, abs=1e-4)
    # bad checkpoint arguments are named
    assert cli_main(["eval", str(tmp_path / "nope.pt"), str(data / "val")]) == 2
    assert "nope.pt does not exist" in capsys.readouterr().err
    assert cli_main(["sample", str(out), "--label", "1"]) == 2
    assert "--label" in capsys.readouterr().err


def test_conditional_grey_realnvp_memory_saving(tmp_path, capsys):
    data = tmp_path / "data"
    write_folder(data, per_photo=3, classes=True, photos=("camera", "chelsea"))
    cfg = tiny(data, tmp_path / "run", model="realnvp", channels=1, conditional=True, memory_saving=True,
               memory_saving_chunk=2, steps=3, val_fraction=0.3)
    result = run(cfg)
    assert result.steps == 3 and result.n_val == 2 and len(result.losses) == 3
    assert result.val_bits_per_dim is not None and result.val_bits_per_dim > 0
    model, config, state = load_trained(result.checkpoint)
    assert model.conditional and state["data"]["classes"] == ["camera", "chelsea"] and config.memory_saving
    assert model.memory_saving_chunk == 2
    grid = tmp_path / "g.png"
    assert cli_main(["sample", result.checkpoint, "--n", "2", "--label", "1", "--out", str(grid)]) == 0
    with Image.open(grid) as im:
        assert im.mode == "L" and im.size == (2 * 18 + 2, 18 + 2)
    capsys.readouterr()
    # bf16 autocast trains too
    assert run(tiny(data, tmp_path / "bf16", autocast="bf16", steps=2)).steps == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("memory_saving, autocast", [(False, "none"), (True, "bf16")])
def test_train_on_cuda_matches_its_checkpoint(tmp_path, memory_saving, autocast):
    """The GPU path of flowkern train (the GPU run of scripts/gpu_check.sh): a run on --device
    cuda trains, its checkpoint loads on the CPU, and eval on the CPU gives the run's val bits/dim."""
    data = tmp_path / "data"
    write_folder(data / "train", per_photo=4)
    write_folder(data / "val", per_photo=1, seed=3)
    result = run(tiny(data, tmp_path / "run", device="cuda", memory_saving=memory_saving, autocast=autocast,
                      steps=4, lr=3e-3))
    assert result.steps == 4 and all(torch.isfinite(torch.tensor(result.losses)))
    model, config, _ = load_trained(result.checkpoint)
    assert config.device == "cuda" and all(p.device.type == "cpu" for p in model.parameters())
    assert cli_main(["eval", result.checkpoint, str(data / "val"), "--batch", "3", "--workers", "0"]) == 0


def test_checkpoint_files(tmp_path):
    for step in (1, 2, 3):
        path = save_checkpoint(tmp_path, {"step": step, "w": torch.arange(4.0) * step}, keep=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2, 3] and path.name == "step-00000003.pt"
    assert torch.equal(read_checkpoint(path)["w"], torch.arange(4.0) * 3)
    assert not list(tmp_path.glob(".*.tmp"))
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    with pytest.raises(CheckpointError, match=r"step-00000003.pt is truncated: \d+ of \d+ payload bytes"):
        read_checkpoint(path)
    flipped = bytearray(data)
    flipped[-100] ^= 0xFF
    path.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="step-00000003.pt is corrupt"):
        read_checkpoint(path)
    (tmp_path / "x.pt").write_bytes(b"hello")
    with pytest.raises(CheckpointError, match="x.pt is not a flowkern training checkpoint"):
        read_checkpoint(tmp_path / "x.pt")


def test_resume_skips_a_corrupt_checkpoint_and_refuses_another_run(tmp_path, capsys):
    data = tmp_path / "data"
    write_folder(data, per_photo=2)
    out = tmp_path / "run"
    run(tiny(data, out, steps=4, checkpoint_every=2))
    assert [s for s, _ in list_checkpoints(out)] == [2, 4]
    # the same --out without --resume: refused, nothing overwritten
    with pytest.raises(TrainError, match="already holds checkpoints.*--resume"):
        run(tiny(data, out, steps=6, checkpoint_every=2))
    # a truncated newest checkpoint: named, the previous one used
    newest = out / "step-00000004.pt"
    newest.write_bytes(newest.read_bytes()[:1000])
    result = run(tiny(data, out, steps=6, checkpoint_every=2, resume=True))
    err = capsys.readouterr().err
    assert "step-00000004.pt is truncated" in err and "trying the previous checkpoint" in err
    assert result.start_step == 2 and result.steps == 6
    # a different architecture / optimisation: refused, the differing fields named
    with pytest.raises(TrainError, match=r"Differing: hidden: checkpoint 16, now 32; lr: checkpoint 0.001, now 0.01"):
        run(tiny(data, out, steps=8, hidden=32, lr=1e-2, resume=True))
    # different data: refused naming the counts
    write_folder(data / "more", per_photo=1)
    with pytest.raises(TrainError, match="data n_train: checkpoint"):
        run(tiny(data, out, steps=8, resume=True))
