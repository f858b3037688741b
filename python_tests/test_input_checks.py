"""flowkern.nn models check their input against their parameters (issue 30, item 5): another dtype
raises TypeError naming ``x``, the input's dtype and the model's (not torch's RuntimeError from a
subnet), autocast excepted; an actnorm scale holding 0 (log-det -inf, not invertible) raises
ValueError, checked once per parameter version, not per call."""

from __future__ import annotations

import pytest
import torch

from flowkern import nn as fnn


def _models():
    torch.manual_seed(0)
    vec = fnn.build_flow(6, 2, 8)
    vec(torch.randn(4, 6))
    glow = fnn.build_glow((3, 8, 8), levels=2, depth=1, hidden=8)
    glow(torch.rand(4, 3, 8, 8))
    realnvp = fnn.build_realnvp((3, 8, 8), levels=2, hidden=8, n_checker=1, n_channel=1, n_final=1)
    realnvp(torch.rand(4, 3, 8, 8))
    step = fnn.GlowStep(4, hidden=8)
    step(torch.randn(3, 4, 2, 2))
    coupling = fnn.AffineCoupling(6, fnn.MLP(3, 6, hidden=8))
    actnorm = fnn.ActNorm(6)
    actnorm(torch.randn(4, 6))
    inv = fnn.InvConv1x1(6)
    return {"flow": (vec, (4, 6)), "glow": (glow, (2, 3, 8, 8)), "realnvp": (realnvp, (2, 3, 8, 8)),
            "glow_step": (step, (2, 4, 2, 2)), "coupling": (coupling, (2, 6)), "actnorm": (actnorm, (2, 6)),
            "invconv": (inv, (2, 6))}


MODELS = _models()


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16], ids=str)
def test_other_dtype_raises_flowkern_type_error(name, dtype):
    model, shape = MODELS[name]
    x = torch.randn(shape).to(dtype)
    with pytest.raises(TypeError) as info:
        model(x)
    msg = str(info.value)
    assert msg.startswith("x must have the dtype of the model's parameters"), msg
    assert str(dtype) in msg and "torch.float32" in msg


@pytest.mark.parametrize("name", ["glow", "realnvp", "flow"])
def test_inverse_checks_latents_too(name):
    model, shape = MODELS[name]
    with torch.no_grad():
        out, _ = model(torch.rand(shape))
    if isinstance(out, list):
        with pytest.raises(TypeError, match=r"^latents\[0\] must have the dtype"):
            model.inverse([z.double() for z in out])
    else:
        with pytest.raises(TypeError, match="^z must have the dtype"):
            model.inverse(out.double())


@pytest.mark.parametrize("name", ["flow", "glow", "realnvp"])
def test_autocast_keeps_working(name):
    model, shape = MODELS[name]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out32, _ = model(torch.rand(shape))  # a float32 model given float32 input
        out16, ld = model(torch.rand(shape).bfloat16())  # low-precision input in the autocast dtype
    first = out16[0] if isinstance(out16, list) else out16
    assert first.dtype == torch.bfloat16 and ld.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(TypeError, match="^x must have the dtype"):
        model(torch.rand(shape).double())


def test_float64_model_takes_float64():
    flow = fnn.build_flow(6, 1, 8).double()
    z, ld = flow(torch.randn(3, 6, dtype=torch.float64))
    assert z.dtype == ld.dtype == torch.float64


# ---- actnorm scale holding 0 --------------------------------------------------------------------
def _zero_scale(layer_scale: torch.Tensor, channel: int = 1) -> None:
    with torch.no_grad():
        layer_scale[channel] = 0.0


def test_actnorm_zero_scale_raises():
    layer = fnn.ActNorm(4)
    layer(torch.randn(8, 4))
    _zero_scale(layer.scale)
    for call in (layer, layer.inverse):
        with pytest.raises(ValueError, match=r"^ActNorm.scale holds 0 at channels \[1\]"):
            call(torch.randn(2, 4))


def test_actnorm_coupling_and_glow_step_zero_scale_raise():
    coupling = fnn.ActNormCoupling(4, fnn.MLP(2, 4, hidden=8))
    coupling(torch.randn(8, 4))
    _zero_scale(coupling.actnorm.scale, 3)
    with pytest.raises(ValueError, match=r"^ActNormCoupling.actnorm.scale holds 0 at channels \[3\]"):
        coupling(torch.randn(2, 4))
    step = fnn.GlowStep(4, hidden=8)
    step(torch.randn(3, 4, 2, 2))
    _zero_scale(step.actnorm.scale, 0)
    with pytest.raises(ValueError, match=r"^GlowStep.actnorm.scale holds 0"):
        step(torch.randn(2, 4, 2, 2))
    flow = fnn.build_glow((3, 4, 4), levels=1, depth=1, hidden=8)
    flow(torch.rand(3, 3, 4, 4))
    _zero_scale(flow.levels[0][1].actnorm.scale)
    with pytest.raises(ValueError, match="holds 0"):
        flow.log_prob(torch.rand(2, 3, 4, 4))


def test_zero_scale_check_reads_values_once_per_version(monkeypatch):
    layer = fnn.ActNorm(4)
    layer(torch.randn(8, 4))
    reads = []
    real_any = torch.Tensor.any

    def counting_any(self, *args, **kwargs):
        reads.append(1)
        return real_any(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "any", counting_any)
    for _ in range(3):
        layer(torch.randn(2, 4))
    assert len(reads) == 0  # unchanged since the init's check: no read
    with torch.no_grad():
        layer.scale.mul_(2.0)  # a new version (as an optimizer step)
    layer(torch.randn(2, 4))
    layer(torch.randn(2, 4))
    assert len(reads) == 1
    with torch.no_grad():
        layer.scale.zero_()
    with pytest.raises(ValueError, match="holds 0"):
        layer(torch.randn(2, 4))
