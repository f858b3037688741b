"""flowkern.train's data: image folders built at test time from the photographs bundled with
scikit-image and scikit-learn (crops written as PNG / JPEG), found recursively, converted to the
model's channels, split, sampled by step; and every bad input named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from flowkern.cli import main as cli_main
from flowkern.train import ImageDataset, StepSampler, TrainConfig, TrainError, run, split_dataset
from flowkern.train.loop import make_loader

skimage_data = pytest.importorskip("skimage.data")


def photographs() -> dict[str, np.ndarray]:
    """The bundled photographs: RGB and grey (scikit-image), RGB (scikit-learn)."""
    from sklearn.datasets import load_sample_images

    photos = {"chelsea": skimage_data.chelsea(), "coffee": skimage_data.coffee(), "astronaut": skimage_data.astronaut(),
              "camera": skimage_data.camera()}
    for name, im in zip(("china", "flower"), load_sample_images().images):
        photos[name] = im
    return photos


def write_folder(root: Path, size: int = 24, per_photo: int = 3, classes: bool = False, seed: int = 0,
                 photos: tuple[str, ...] = ("chelsea", "coffee", "camera", "china", "flower")) -> list[Path]:
    """Random size x size crops of the photographs, alternately PNG and JPEG, nested one level
    (the photo's name is the subfolder: classes with ``classes``, else under ``nested/``)."""
    rng = np.random.default_rng(seed)
    every = photographs()
    written = []
    for name in photos:
        im = every[name]
        folder = root / name if classes else root / "nested" / name
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(per_photo):
            y, x = rng.integers(0, im.shape[0] - size), rng.integers(0, im.shape[1] - size)
            path = folder / f"{name}_{k}.{'png' if k % 2 else 'jpg'}"
            Image.fromarray(im[y:y + size, x:x + size]).save(path)
            written.append(path)
    return written


def tiny(folder, out, **kw) -> TrainConfig:
    base = dict(folder=str(folder), out=str(out), size=16, levels=2, depth=1, hidden=16, batch=4, steps=2,
                checkpoint_every=100, sample_every=0, log_every=1, workers=0, val_fraction=0.2, progress=False)
    base.update(kw)
    return TrainConfig(**base)


def test_modes_are_converted_to_the_models_channels(tmp_path):
    chelsea = photographs()["chelsea"][:20, :20]
    (tmp_path / "a" / "b").mkdir(parents=True)
    Image.fromarray(chelsea).save(tmp_path / "rgb.PNG")                       # upper-case suffix
    Image.fromarray(chelsea[..., 0]).save(tmp_path / "a" / "grey.jpg")
    rgba = np.concatenate([chelsea, np.full((20, 20, 1), 128, np.uint8)], 2)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a" / "b" / "rgba.png")
    Image.fromarray(chelsea).convert("P").save(tmp_path / "a" / "b" / "palette.png")
    (tmp_path / "notes.txt").write_text("not an image")
    split = split_dataset(str(tmp_path), size=16, fit="crop", conditional=False, val_fraction=0.0, seed=0,
                          skip_bad=False)
    assert sorted(r.rel for r in split.train) == ["a/b/palette.png", "a/b/rgba.png", "a/grey.jpg", "rgb.PNG"]
    for channels in (3, 1):
        ds = ImageDataset(split.train, 16, channels, "crop", seed=0)
        for i, rec in enumerate(split.train):
            x, label = ds[i]
            assert x.shape == (channels, 16, 16) and x.dtype == torch.float32 and label == 0
            assert 0 <= x.min() and x.max() < 1
            k = ds.pixels(i, None)                                           # centre crop, uint8
            if channels == 3 and rec.rel == "a/grey.jpg":
                assert torch.equal(k[0], k[1]) and torch.equal(k[1], k[2])    # grey replicated
            if rec.rel == "a/b/rgba.png" and channels == 3:                  # alpha dropped, colour kept
                assert torch.equal(k, torch.from_numpy(chelsea[2:18, 2:18]).permute(2, 0, 1))
        # the same key gives the same pixels and noise; another step another crop / noise
        assert torch.equal(ds[(0, 3, 1)][0], ds[(0, 3, 1)][0])
        assert not torch.equal(ds[(0, 3, 1)][0], ds[(0, 4, 1)][0])
        x, _ = ds[0]                                                         # dequantised: floors to the pixels
        assert torch.equal((x * 256).floor().to(torch.uint8), ds.pixels(0, None))


def test_val_folder_fraction_and_classes(tmp_path):
    write_folder(tmp_path / "plain", per_photo=4)
    split = split_dataset(str(tmp_path / "plain"), size=16, fit="crop", conditional=False, val_fraction=0.25,
                          seed=0, skip_bad=False)
    assert (len(split.train), len(split.val)) == (15, 5)
    again = split_dataset(str(tmp_path / "plain"), size=16, fit="crop", conditional=False, val_fraction=0.25,
                          seed=0, skip_bad=False)
    assert [r.rel for r in again.val] == [r.rel for r in split.val]           # seeded, repeatable
    tiny_frac = split_dataset(str(tmp_path / "plain"), size=16, fit="crop", conditional=False, val_fraction=0.001,
                              seed=0, skip_bad=False)
    assert len(tiny_frac.val) == 1                                            # at least one when > 0

    root = tmp_path / "classes"
    write_folder(root / "train", classes=True, per_photo=2)
    write_folder(root / "val", classes=True, per_photo=1, seed=1, photos=("chelsea", "camera"))
    split = split_dataset(str(root), size=16, fit="crop", conditional=True, val_fraction=0.5, seed=0, skip_bad=False)
    assert split.classes == ["camera", "chelsea", "china", "coffee", "flower"]
    assert len(split.train) == 10 and len(split.val) == 2 and "val/" in split.how
    assert {(r.rel.split("/")[0], r.label) for r in split.train} == {(c, i) for i, c in enumerate(split.classes)}
    assert sorted(r.label for r in split.val) == [0, 1]
    # a val class the training set lacks, and loose images with --conditional, are named
    write_folder(root / "val", classes=True, per_photo=1, photos=("astronaut",))
    with pytest.raises(TrainError, match=r"\['astronaut'\]"):
        split_dataset(str(root), size=16, fit="crop", conditional=True, val_fraction=0, seed=0, skip_bad=False)
    Image.fromarray(photographs()["coffee"][:20, :20]).save(tmp_path / "plain" / "loose.png")
    with pytest.raises(TrainError, match="loose.png"):
        split_dataset(str(tmp_path / "plain"), size=16, fit="crop", conditional=True, val_fraction=0, seed=0,
                      skip_bad=False)


def test_step_sampler_is_world_size_invariant_and_resumable(tmp_path):
    write_folder(tmp_path, per_photo=2)                                      # 10 images
    split = split_dataset(str(tmp_path), size=16, fit="crop", conditional=False, val_fraction=0, seed=0,
                          skip_bad=False)
    ds = ImageDataset(split.train, 16, 3, "crop", seed=5)
    one = StepSampler(ds, 4, num_replicas=1, rank=0, seed=5, start_step=0, end_step=10)
    two = [StepSampler(ds, 4, num_replicas=2, rank=r, seed=5, start_step=0, end_step=10) for r in (0, 1)]
    for step in range(10):
        assert one.step_keys(step) == two[0].step_keys(step) + two[1].step_keys(step)
    keys = list(one)
    assert len(keys) == len(one) == 40
    # every epoch (10 consecutive positions) is a permutation of the images
    for e in range(4):
        assert sorted(k[0] for k in keys[10 * e:10 * e + 10]) == list(range(10))
    # started at step 6: exactly the tail, no replay
    late = StepSampler(ds, 4, num_replicas=1, rank=0, seed=5, start_step=6, end_step=10)
    assert list(late) == keys[24:]
    with pytest.raises(TrainError, match="--batch 3 must be divisible by the process count 2"):
        StepSampler(ds, 3, num_replicas=2, rank=0, seed=5, start_step=0, end_step=1)
    # worker processes load the same batches as the main process
    cfg = tiny(tmp_path, tmp_path / "o", batch=4, workers=0)
    b0 = [x for x, _ in make_loader(ds, late, cfg, torch.device("cpu"))]
    cfg.workers = 2
    b2 = [x for x, _ in make_loader(ds, late, cfg, torch.device("cpu"))]
    assert len(b0) == 4 and all(torch.equal(a, b) for a, b in zip(b0, b2))


def _cli_error(capsys, argv) -> str:
    assert cli_main(argv) == 2
    return capsys.readouterr().err


def test_bad_input_is_named(tmp_path, capsys):
    good = tmp_path / "good"
    write_folder(good, per_photo=2)
    common = ["--size", "16", "--levels", "2", "--depth", "1", "--hidden", "8", "--batch", "2", "--steps", "1",
              "--workers", "0", "--no-progress"]
    err = _cli_error(capsys, ["train", str(tmp_path / "missing"), "--out", str(tmp_path / "o1"), *common])
    assert "does not exist" in err and "missing" in err
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    err = _cli_error(capsys, ["train", str(tmp_path / "empty"), "--out", str(tmp_path / "o2"), *common])
    assert "holds no PNG / JPEG images" in err
    err = _cli_error(capsys, ["train", str(good), "--out", str(tmp_path / "o3"), *common, "--size", "18"])
    assert "--size 18 must be divisible by 2**levels = 4" in err and "try --size 16" in err
    err = _cli_error(capsys, ["train", str(good), "--out", str(tmp_path / "o3c"), *common, "--image-cache", "-1"])
    assert "--image-cache must be an int in [0, inf], got -1" in err
    # images smaller than --size: named, with the way out
    err = _cli_error(capsys, ["train", str(good), "--out", str(tmp_path / "o4"), *common, "--size", "32"])
    assert "smaller than --size 32" in err and "chelsea_0.jpg (24x24)" in err and "--fit resize" in err
    # ... which --fit resize accepts (the shorter side scaled up to --size)
    cfg = tiny(good, tmp_path / "o4r", size=32, fit="resize", steps=1)
    assert run(cfg).steps == 1
    # an unwritable --out (a path under a file), checked before training
    (tmp_path / "file").write_text("x")
    err = _cli_error(capsys, ["train", str(good), "--out", str(tmp_path / "file" / "out"), *common])
    assert "--out" in err and "not a writable folder" in err
    # truncated JPEG and a text file named .png: named; --skip-bad counts them
    bad = tmp_path / "bad"
    write_folder(bad, per_photo=2)
    data = (bad / "nested" / "coffee" / "coffee_0.jpg").read_bytes()
    (bad / "nested" / "coffee" / "coffee_0.jpg").write_bytes(data[: len(data) // 2])
    (bad / "fake.png").write_text("not a png")
    err = _cli_error(capsys, ["train", str(bad), "--out", str(tmp_path / "o5"), *common])
    assert "2 unreadable or truncated image(s)" in err and "fake.png" in err and "coffee_0.jpg" in err
    assert "--skip-bad" in err
    assert cli_main(["train", str(bad), "--out", str(tmp_path / "o6"), *common, "--skip-bad"]) == 0
    out = capsys.readouterr().out
    assert "skipped 2 unreadable: " in out and "fake.png" in out
    # flags with bad values name the flag
    for flag, value, words in (("--batch", "0", "--batch must be an int in [1"),
                               ("--val-fraction", "1.5", "--val-fraction must be in [0, 1)"),
                               ("--lr", "-1", "--lr must be > 0"),
                               ("--memory-saving-chunk", "2", "--memory-saving-chunk 2 needs --memory-saving"),
                               ("--channels", "1", None)):
        argv = ["train", str(good), "--out", str(tmp_path / f"o7{flag}"), *common, flag, value]
        if words is None:
            assert cli_main(argv) == 0                                       # grey model: fine
            capsys.readouterr()
        else:
            assert words in _cli_error(capsys, argv)


def test_batch_smaller_than_the_process_count(tmp_path, monkeypatch):
    """--batch below (or not a multiple of) the process count is refused before any process
    group work: the check runs on what torchrun's environment says."""
    import flowkern.train.loop as loop
    from flowkern.train.distributed import Processes

    write_folder(tmp_path, per_photo=1)
    monkeypatch.setattr(loop, "setup", lambda device: Processes(0, 4, 0, torch.device("cpu"), None, False))
    for batch in (2, 6):
        with pytest.raises(TrainError, match=f"--batch {batch} must be a multiple of the process count 4"):
            run(tiny(tmp_path, tmp_path / "o", batch=batch))


def test_output_folder_inside_the_data_is_not_data(tmp_path):
    """Sample grids written under FOLDER/--out are not taken as training images (a resume sees
    the same data)."""
    write_folder(tmp_path, per_photo=1)
    out = tmp_path / "run"
    first = run(tiny(tmp_path, out, steps=2, sample_every=1, sample_n=1))
    assert list(out.glob("samples-*.png")) and first.n_train + first.n_val == 5
    again = run(tiny(tmp_path, out, steps=3, sample_every=1, sample_n=1, resume=True))
    assert (again.start_step, again.n_train + again.n_val) == (2, 5)


@pytest.mark.parametrize("fit", ["crop", "resize"])
def test_image_cache_gives_the_same_items_within_its_bound(tmp_path, fit):
    import pickle

    write_folder(tmp_path, size=40, per_photo=2)                             # 10 images of 40 x 40 x 3 = 4800 B
    split = split_dataset(str(tmp_path), size=16, fit=fit, conditional=False, val_fraction=0, seed=0, skip_bad=False)
    plain = ImageDataset(split.train, 16, 3, fit, seed=3)
    cached = ImageDataset(split.train, 16, 3, fit, seed=3, cache_mib=1)
    cached.cache_bytes = 3 * 40 * 40 * 3 if fit == "crop" else 3 * 16 * 16 * 3  # room for 3 fitted images
    keys = [(i % 10, step, i) for step in range(3) for i in range(12)] + list(range(10))
    for key in keys:
        a, b = plain[key], cached[key]
        assert torch.equal(a[0], b[0]) and a[1] == b[1]
        assert len(cached._cache) <= 3 and cached._cached_bytes <= cached.cache_bytes
    assert len(cached._cache) == 3 and list(cached._cache) == [7, 8, 9]    # the most recently used
    # a hit does not read the file: the cached image survives the file's deletion
    before = plain[9][0]
    Path(split.train[9].path).unlink()
    assert torch.equal(cached[9][0], before)
    with pytest.raises(TrainError, match="can no longer be read"):
        plain[9]
    # a worker process starts with an empty cache
    assert len(pickle.loads(pickle.dumps(cached))._cache) == 0
    # off: nothing kept
    off = ImageDataset(split.train, 16, 3, fit, seed=3, cache_mib=0)
    off[0]
    assert len(off._cache) == 0
