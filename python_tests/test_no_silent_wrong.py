"""No silent wrong result on the image path (issue 30, items 1-3): dequantize takes integer
pixels only (the [0, 1] ToTensor case raises unless ``scaled=True``), bits_per_dim checks its
per-sample input, every ActNorm's data-dependent init refuses data it cannot normalise (and
can be skipped by hand), and convert() refuses options it does not know or cannot apply.

Every test here fails on 6c0ee7a."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

from flowkern import nn as fnn
from flowkern.compat import compvis as Kc
from flowkern.compat import convert
from flowkern.compat import freia as Kf
from flowkern.compat import nflows as Kl
from flowkern.compat import normflows as Kn

D64 = torch.float64


# ---- 1. dequantize / bits_per_dim ---------------------------------------------------------------
def _pixels(seed: int = 0, shape=(4, 3, 8, 8)) -> torch.Tensor:
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_dequantize_rejects_unit_scaled_images_and_names_the_fix():
    k = _pixels()
    with pytest.raises(ValueError, match=r"x must hold integer pixel values in \[0, 255\].*\[0, 1\].*ToTensor"
                                         r".*\* 255.*scaled=True"):
        fnn.dequantize(k.float() / 255)  # torchvision's ToTensor output


def test_dequantize_scaled_option_equals_the_integer_path():
    k = _pixels()
    for n_bits, kk in ((8, k), (5, k // 8)):
        want = fnn.dequantize(kk, n_bits, generator=torch.Generator().manual_seed(1))
        got = fnn.dequantize(kk.float() / (2 ** n_bits - 1), n_bits, generator=torch.Generator().manual_seed(1),
                             scaled=True)
        assert torch.equal(got, want)
    with pytest.raises(ValueError, match=r"x must hold \[0, 1\]-scaled pixels.*drop scaled=True"):
        fnn.dequantize(k.float(), scaled=True)
    with pytest.raises(ValueError, match=r"x must hold \[0, 1\]-scaled pixels k / 255.*not 8-bit quantised"):
        fnn.dequantize(torch.full((2, 3), 0.5), scaled=True)
    with pytest.raises(TypeError, match="scaled must be a bool"):
        fnn.dequantize(k, scaled=1)


def test_dequantize_takes_integer_pixels_of_any_dtype_and_no_other_floats():
    k = _pixels(shape=(2, 3, 4, 4)) // 2  # [0, 127]: fits int8
    want = fnn.dequantize(k, generator=torch.Generator().manual_seed(0))
    for dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.float16, torch.float32,
                  torch.float64):
        x = fnn.dequantize(k.to(dtype), generator=torch.Generator().manual_seed(0))
        assert torch.equal(x, want), dtype
        if dtype.is_floating_point:  # the same values off the integers are refused (6c0ee7a: taken)
            with pytest.raises(ValueError, match="x must hold integer pixel values.*non-integer"):
                fnn.dequantize(k.to(dtype) + 1.5)
    with pytest.raises(TypeError, match="x must hold integer pixel values.*bool"):
        fnn.dequantize(k > 60)


@pytest.mark.parametrize("bad,match", [
    (torch.tensor([0.0, 12.5, 200.0]), r"x must hold integer pixel values in \[0, 255\].*non-integer"),
    (torch.tensor([-1.0, 0.0, 3.0]), r"x must hold integer pixel values in \[0, 255\].*negative value -1"),
    (torch.tensor([-1, 0, 3]), r"x must hold integer pixel values in \[0, 255\].*negative value -1"),
    (torch.tensor([0.0, 256.0]), r"x must hold integer pixel values in \[0, 255\] \(values < 2\^n_bits = 256"),
    (torch.tensor([0.0, float("nan")]), r"x must hold finite integer pixel values"),
])
def test_dequantize_rejects_values_that_are_not_pixels(bad, match):
    with pytest.raises(ValueError, match=match):
        fnn.dequantize(bad)


def test_untrained_glow_bits_per_dim_from_tensor_images_is_not_a_silent_underestimate():
    torch.manual_seed(0)
    glow = fnn.build_glow((3, 8, 8), levels=2, depth=1, hidden=8)
    k = _pixels()
    with torch.no_grad():
        bpd = glow.bits_per_dim(fnn.dequantize(k, generator=torch.Generator().manual_seed(0))).mean()
        assert bpd > 5  # an untrained model is nowhere near the data's ~8 bits of entropy below
        with pytest.raises(ValueError, match="ToTensor"):
            fnn.dequantize(k.float() / 255)  # 6c0ee7a: squashed into [0, 0.004), ~2 bits/dim less
        bpd_scaled = glow.bits_per_dim(fnn.dequantize(k.float() / 255, generator=torch.Generator().manual_seed(0),
                                                      scaled=True)).mean()
    torch.testing.assert_close(bpd_scaled, bpd)


def test_bits_per_dim_checks_its_per_sample_input():
    lp = torch.randn(4, dtype=D64) - 100
    D = 3 * 8 * 8
    torch.testing.assert_close(fnn.bits_per_dim(lp, D), -lp / (D * math.log(2)) + 8)
    with pytest.raises(ValueError, match=r"log_prob must hold one log-likelihood per sample, shape \(B,\)"):
        fnn.bits_per_dim(torch.randn(4, D), D)  # per-dimension log-densities, not summed
    with pytest.raises(TypeError, match="log_prob must be a floating torch.Tensor"):
        fnn.bits_per_dim(torch.tensor([-3, -4]), D)
    with pytest.raises(TypeError, match="log_prob must be a floating torch.Tensor"):
        fnn.bits_per_dim(-300.0, D)


# ---- 2. ActNorm data-dependent init ------------------------------------------------------------
# name: (factory, the call that runs the init on x (B, C[, H, W]), the per-channel scale it set)
LAYERS = {
    "nn.ActNorm": (lambda: fnn.ActNorm(3), lambda m, x: m(x), lambda m: m.scale.reshape(-1)),
    "nn.ActNormCoupling": (lambda: fnn.ActNormCoupling(3, fnn.MLP(1, 4, hidden=8)), lambda m, x: m(x),
                           lambda m: m.actnorm.scale.reshape(-1)),
    "nn.GlowStep": (lambda: fnn.GlowStep(3, 8), lambda m, x: m(x), lambda m: m.actnorm.scale.reshape(-1)),
    "freia.ActNorm": (lambda: Kf.ActNorm([(3,)]), lambda m, x: m([x]), lambda m: m.scale.exp().reshape(-1)),
    "normflows.ActNorm": (lambda: Kn.ActNorm((3,)), lambda m, x: m(x), lambda m: m.s.exp().reshape(-1)),
    "nflows.ActNorm": (lambda: Kl.ActNorm(3), lambda m, x: m(x), lambda m: m.log_scale.exp().reshape(-1)),
    "compvis.ActNorm": (lambda: Kc.ActNorm(3, logdet=True), lambda m, x: m(x), lambda m: m.scale.reshape(-1)),
}
IMAGE_ONLY = {"nn.GlowStep"}
IMAGE_LAYERS = {**LAYERS,  # the compat layers whose parameter shape says image
                "freia.ActNorm": (lambda: Kf.ActNorm([(3, 4, 4)]), *LAYERS["freia.ActNorm"][1:]),
                "normflows.ActNorm": (lambda: Kn.ActNorm((3, 1, 1)), *LAYERS["normflows.ActNorm"][1:])}


def _cases():
    for name in LAYERS:
        for image in (False, True):
            if name in IMAGE_ONLY and not image:
                continue
            yield pytest.param(name, image, id=f"{name}-{'image' if image else 'vector'}")


def _layer(name: str, image: bool):
    make, call, scale = (IMAGE_LAYERS if image else LAYERS)[name]
    m = make().double().train()
    return m, (lambda x: call(m, x)), (lambda: scale(m))


def _data(image: bool, B: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (B, 3, 4, 4) if image else (B, 3)
    return 2 + 3 * torch.randn(shape, generator=g, dtype=D64)


@pytest.mark.parametrize("name,image", list(_cases()))
def test_actnorm_init_rejects_non_finite_batches(name, image):
    m, run, _ = _layer(name, image)
    x = _data(image)
    x[1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"non-finite statistics in channels \[2\].*finite values"):
        run(x)
    m2, run2, _ = _layer(name, image)
    x = _data(image)
    x[0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"channels \[0\]"):
        run2(x)


@pytest.mark.parametrize("name,image", list(_cases()))
def test_actnorm_init_gives_constant_channels_scale_one_and_warns(name, image):
    m, run, scale = _layer(name, image)
    x = _data(image)
    x[:, 1] = 7.0
    with pytest.warns(UserWarning, match=r"channels \[1\] have \(near-\)zero spread.*scale is set to 1"):
        run(x)
    s = scale().detach()
    assert s[1] == 1.0, s  # 6c0ee7a: 1 / 1e-6 for nn, normflows and CompVis; no warning anywhere
    assert torch.isfinite(s).all() and (s[[0, 2]] - 1).abs().min() > 0.05  # the varying channels: normalised


@pytest.mark.parametrize("name,image", [p for p in _cases() if not p.values[1]])
def test_actnorm_init_needs_two_values_per_channel(name, image):
    _, run, _ = _layer(name, image)
    with pytest.raises(ValueError, match="at least 2 values per channel.*got 1.*batch size x spatial size >= 2"
                                         ".*initialized = True"):
        run(_data(image, B=1))  # 6c0ee7a: NaN (the peers' formulas) or 1e6 (flowkern.nn)


@pytest.mark.parametrize("name,image", list(_cases()))
def test_actnorm_initialized_can_be_set_by_hand(name, image):
    m, run, scale = _layer(name, image)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    norm = getattr(m, "actnorm", m)  # a coupling's or a Glow step's actnorm
    norm.initialized = True  # 6c0ee7a: TypeError (a buffer), or ignored / a shadowed method
    x = _data(image)
    run(x)
    after = m.state_dict()
    assert list(after) == list(before)  # no key added (checkpoints and the peers' keys unchanged)
    for k, v in before.items():
        if "init" not in k:
            assert torch.equal(after[k], v), k  # no data-dependent init ran
    assert _is_initialized(m)
    # False re-arms the init
    norm.initialized = False
    assert not _is_initialized(m)
    run(x)
    assert _is_initialized(m) and not torch.equal(scale().detach(), torch.ones(3, dtype=D64))
    with pytest.raises(TypeError, match="initialized must be a bool"):
        norm.initialized = "yes"


def _is_initialized(m: nn.Module) -> bool:
    m = getattr(m, "actnorm", m)
    flag = m.initialized
    return bool(flag() if callable(flag) else flag)


def test_actnorm_initialized_flag_round_trips_through_state_dict():
    a = fnn.ActNorm(3).double()
    a.initialized = True
    b = fnn.ActNorm(3).double()
    b.load_state_dict(a.state_dict())
    x = _data(False)
    assert torch.equal(b(x)[0], x)  # loaded as initialised: the identity parameters stay
    # compat: the peers' own flags, no new key
    for make in (lambda: Kn.ActNorm((3,)), lambda: Kl.ActNorm(3), lambda: Kc.ActNorm(3)):
        p = make()
        keys = list(p.state_dict())
        p.initialized = True
        assert list(p.state_dict()) == keys
        q = make()
        q.load_state_dict(p.state_dict())
        assert _is_initialized(q)


# ---- 3. convert() options -----------------------------------------------------------------------
def _sequence_inn():
    Ff = pytest.importorskip("FrEIA.framework")
    Fm = pytest.importorskip("FrEIA.modules")
    inn = Ff.SequenceINN(4)
    inn.append(Fm.GLOWCouplingBlock, clamp=2.0, subnet_constructor=lambda i, o: nn.Linear(i, o))
    return inn


def test_convert_rejects_unknown_options_and_lists_the_accepted_ones():
    with pytest.raises(TypeError, match=r"unknown keyword argument.*'memory_savings' \(did you mean 'memory_saving'"
                                        r"\?\).*accepts report, memory_saving, memory_saving_chunk"):
        convert(_sequence_inn(), memory_savings=True)


@pytest.mark.parametrize("kw,exc,match", [
    (dict(memory_saving="yes"), TypeError, "memory_saving must be a bool, got str"),
    (dict(memory_saving=1), TypeError, "memory_saving must be a bool, got int"),
    (dict(memory_saving=True, memory_saving_chunk=2.0), TypeError, "memory_saving_chunk must be an int or None"),
    (dict(memory_saving=True, memory_saving_chunk=0), ValueError, r"memory_saving_chunk must be an int in \[1"),
    (dict(report=1), TypeError, "report must be a bool"),
])
def test_convert_checks_option_types(kw, exc, match):
    with pytest.raises(exc, match=match):
        convert(_sequence_inn(), **kw)


def test_convert_refuses_options_that_cannot_apply_to_the_model():
    inn = _sequence_inn()
    with pytest.raises(ValueError, match=r"memory_saving=True cannot apply to this model .*SequenceINN.*GraphINN"):
        convert(inn, memory_saving=True)  # 6c0ee7a: converted without it, silently
    with pytest.raises(ValueError, match="memory_saving_chunk=2 cannot apply without memory_saving=True"):
        convert(inn, memory_saving_chunk=2)
    assert type(convert(inn, memory_saving=False)) is Kf.SequenceINN  # the default asks for nothing


def test_convert_applies_memory_saving_where_a_container_takes_it():
    Ff = pytest.importorskip("FrEIA.framework")
    Fm = pytest.importorskip("FrEIA.modules")
    inp = Ff.InputNode(4, 4, 4)
    n1 = Ff.Node(inp, Fm.GLOWCouplingBlock, {"clamp": 2.0, "subnet_constructor":
                                               lambda i, o: nn.Conv2d(i, o, 3, padding=1)})
    graph = Ff.GraphINN([inp, n1, Ff.OutputNode(n1)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = convert(graph, memory_saving=True)
    assert ours.memory_saving is True
    # FrEIA's GraphINN does not chunk: the chunk option cannot apply to it (6c0ee7a: ignored)
    with pytest.raises(ValueError, match=r"memory_saving_chunk=2 cannot apply to this model.*MultiscaleFlow"):
        convert(graph, memory_saving=True, memory_saving_chunk=2)
    # the same option inside a plain container of the model applies too
    wrapped = convert(nn.ModuleList([_sequence_inn(), graph]), memory_saving=True)
    assert wrapped[1].memory_saving is True
