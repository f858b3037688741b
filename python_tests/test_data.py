"""ColorfulDigits: shapes, factor labels, writer-split disjointness, pair sampling, rendering."""

from __future__ import annotations

import pytest
import torch

from .interpretation_example import EXAMPLE_DIR  # noqa: F401  (before the example's modules: puts them on sys.path)

from colorful_digits import (COLOURS, FACTORS, ColorfulDigits, NuisanceParams, load_gray_digits,  # noqa: E402
                             random_deform, render, writer_split)


@pytest.fixture(scope="module")
def train():
    return ColorfulDigits("train", copies=2)


@pytest.fixture(scope="module")
def test():
    return ColorfulDigits("test", copies=1)


def test_shapes_and_ranges(train, test):
    assert train.images.shape == (len(train), 3, 16, 16)
    assert train.images.min() >= 0 and train.images.max() <= 1
    assert set(train.digits.tolist()) == set(range(10)) == set(test.digits.tolist())
    assert set(train.colours.tolist()) == set(range(len(COLOURS)))
    x, d, c = train[5]
    assert x.shape == (3, 16, 16) and d == int(train.digits[5]) and c == int(train.colours[5])


def test_size_32():
    ds = ColorfulDigits("test", size=32, copies=1)
    assert ds.images.shape[1:] == (3, 32, 32)


def test_writer_split_is_disjoint_and_complete():
    tr, te = writer_split(1797, "train"), writer_split(1797, "test")
    assert len(set(tr) & set(te)) == 0 and len(tr) + len(te) == 1797
    assert te.min() > tr.max()  # contiguous held-out writer blocks at the end
    ds_tr, ds_te = ColorfulDigits("train", copies=1), ColorfulDigits("test", copies=1)
    assert not set(ds_tr.source.tolist()) & set(ds_te.source.tolist())


def _label_hue(images: torch.Tensor) -> torch.Tensor:
    """Colour index whose hue matches each image's brightest pixel."""
    flat = images.flatten(2)
    rgb = flat[torch.arange(len(images)), :, flat.sum(1).argmax(1)]
    return (rgb / rgb.norm(dim=1, keepdim=True) @ (COLOURS / COLOURS.norm(dim=1, keepdim=True)).T).argmax(1)


def test_colour_label_matches_pixels(test):
    # The brightest pixel of each image has the hue of its colour label.
    assert (_label_hue(test.images) == test.colours).float().mean() > 0.99


@pytest.mark.parametrize("factor", FACTORS)
def test_pairs_share_the_factor(train, factor):
    g = torch.Generator().manual_seed(1)
    a, b = train.pair_indices(500, factor, g)
    lab = train.labels(factor)
    assert torch.equal(lab[a], lab[b])
    assert (train.source[a] != train.source[b]).float().mean() > 0.98
    other = train.labels("colour" if factor == "digit" else "digit")
    assert (other[a] == other[b]).float().mean() < 0.35  # the other factor is not shared


def test_factor_pairs_mix(train):
    g = torch.Generator().manual_seed(2)
    a, b, f = train.factor_pairs(600, g)
    assert set(f.tolist()) == {0, 1}
    for k, name in enumerate(FACTORS):
        assert torch.equal(train.labels(name)[a[f == k]], train.labels(name)[b[f == k]])


def test_render_shift_and_colour():
    gray, _ = load_gray_digits(16)
    g0 = gray[:1]
    p = NuisanceParams(colour=torch.tensor([2]), brightness=torch.tensor([1.0]),
                       background=torch.tensor([0.0]), shift=torch.tensor([[1, -1]]))
    img = render(g0, p)
    expected = torch.zeros_like(g0)
    expected[:, :, 1:, :-1] = g0[:, :, :-1, 1:]
    assert torch.allclose(img, expected * COLOURS[2].view(1, 3, 1, 1))


def test_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        writer_split(100, "val")
    with pytest.raises(ValueError, match="size"):
        load_gray_digits(12)
    with pytest.raises(ValueError, match="test_blocks"):
        writer_split(100, "train", test_blocks=13)
    with pytest.raises(ValueError, match="copies"):
        ColorfulDigits("train", copies=0)
    with pytest.raises(TypeError, match="copies"):
        ColorfulDigits("train", copies=2.0)
    with pytest.raises(ValueError, match="factor"):
        ColorfulDigits("test", copies=1).labels("style")


def test_factor_pairs_weights(train):
    g = torch.Generator().manual_seed(3)
    a, b, f = train.factor_pairs(2000, g, weights=(3.0, 1.0))
    assert 0.70 < (f == 0).float().mean() < 0.80
    for k, name in enumerate(FACTORS):
        assert torch.equal(train.labels(name)[a[f == k]], train.labels(name)[b[f == k]])
    with pytest.raises(ValueError, match="weights"):
        train.factor_pairs(10, g, weights=(1.0, -1.0))


def test_deform_augments_copies_but_keeps_first_and_labels():
    plain = ColorfulDigits("test", copies=3)
    warped = ColorfulDigits("test", copies=3, deform=1.0)
    n = len(plain) // 3
    assert torch.equal(plain.gray[:n], warped.gray[:n])
    assert torch.equal(plain.digits, warped.digits) and torch.equal(plain.source, warped.source)
    diff = (plain.gray[n:] - warped.gray[n:]).abs().flatten(1).amax(1)
    assert (diff > 0.05).float().mean() > 0.9
    assert warped.images.min() >= 0 and warped.images.max() <= 1
    with pytest.raises(ValueError, match="strength"):
        random_deform(plain.gray[:2], torch.Generator(), -1.0)


def test_rerender_keeps_the_labels_and_draws_new_nuisances(test):
    idx = torch.arange(0, len(test), 3)
    fresh = test.rerender(idx, torch.Generator().manual_seed(3), deform=1.0)
    assert fresh.shape == (len(idx), 3, 16, 16) and fresh.min() >= 0 and fresh.max() <= 1
    assert (_label_hue(fresh) == test.colours[idx]).float().mean() > 0.99
    assert ((fresh - test.images[idx]).abs().flatten(1).amax(1) > 0.05).float().mean() > 0.9
    assert torch.equal(fresh, test.rerender(idx, torch.Generator().manual_seed(3), deform=1.0))  # seeded


def test_rerender_bad_arguments(test):
    g = torch.Generator()
    with pytest.raises(TypeError, match="idx"):
        test.rerender(torch.tensor([0.5]), g)
    with pytest.raises(ValueError, match="idx"):
        test.rerender(torch.tensor([len(test)]), g)
    with pytest.raises(ValueError, match="strength"):
        test.rerender(torch.tensor([0]), g, deform=-1.0)
