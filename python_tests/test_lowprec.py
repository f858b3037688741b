"""Low precision: fp16 / bf16 inputs keep an fp32 log-det that is never inf/NaN for finite
inputs under a bounded scale function (even for huge |s_raw|); ``torch.autocast``
(CPU, bf16) runs through layers and flows; the unbounded ``exp`` scale needs an opt-in
overflow check naming the layer."""

from __future__ import annotations

import pytest
import torch

import flowkern

from .fuzz_strategies import fuzz_backends, probe_backend
from .helpers import make_case

RUNNABLE = [n for n in fuzz_backends() if probe_backend(n) is None]
LOW = [torch.float16, torch.bfloat16]


@pytest.mark.parametrize("backend", RUNNABLE)
@pytest.mark.parametrize("dtype", LOW, ids=str)
@pytest.mark.parametrize("scale", ["tanh", "atan", "sigmoid"])
def test_bounded_scales_stay_finite_for_huge_s_raw(backend, dtype, scale):
    x, s_raw, t, a, b, kw = make_case(B=4, C=9, spatial=(5, 3), split=4, dtype=dtype, layout="halves")
    big = torch.finfo(dtype).max / 2
    with torch.no_grad():
        s_raw[:, ::2] = big
        s_raw[:, 1::2] = -big
    eps = 1e-3 if scale == "sigmoid" else 0.0
    y, logdet, err = flowkern.coupling_forward(x, s_raw, t, a, b, scale=scale, clamp=2.0, eps=eps, check=True,
                                               backend=backend, **kw)
    assert y.dtype == dtype and logdet.dtype == torch.float32 and err.dtype == torch.float32
    assert torch.isfinite(y).all() and torch.isfinite(logdet).all() and torch.isfinite(err).all()
    x2, ld_inv = flowkern.coupling_inverse(y, s_raw, t, a, b, scale=scale, clamp=2.0, eps=eps, backend=backend, **kw)
    assert torch.isfinite(x2).all() and torch.isfinite(ld_inv).all()
    torch.testing.assert_close(ld_inv, -logdet)
    # log-det exact to fp32 accuracy: bounded s = +-clamp(ish) summed in fp32
    exact = flowkern.coupling_forward(*(v.double() for v in (x, s_raw, t, a, b)), scale=scale, clamp=2.0, eps=eps,
                                      backend="reference", **kw)[1]
    torch.testing.assert_close(logdet.double(), exact, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("backend", RUNNABLE)
@pytest.mark.parametrize("dtype", LOW, ids=str)
def test_logdet_is_fp32_and_backward_finite(backend, dtype):
    x, s_raw, t, a, b, kw = make_case(B=3, C=6, spatial=(7,), dtype=dtype, requires_grad=True, layout="interleaved")
    y, logdet = flowkern.coupling_forward(x, s_raw, t, a, b, scale="tanh", backend=backend, **kw)
    assert logdet.dtype == torch.float32
    (y.float().square().sum() - logdet.sum()).backward()
    for v in (x, s_raw._base, a, b):
        assert v.grad.dtype == dtype and torch.isfinite(v.grad).all()


@pytest.fixture
def nn():
    import flowkern.nn

    return flowkern.nn


@pytest.mark.parametrize("cond", [False, True])
def test_autocast_bf16_through_flows(nn, cond):
    torch.manual_seed(0)
    flow = nn.build_flow(8, 2, 32, cond_channels=4 if cond else 0)
    x = torch.randn(64, 8)
    c = torch.randn(64, 4) if cond else None
    args = (x, c) if cond else (x,)
    flow.nll_loss(*args)  # ActNorm init in fp32
    z32, ld32 = flow(*args)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z, logdet = flow(*args)
        loss = flow.nll_loss(*args)
    assert logdet.dtype == torch.float32, f"log-det under autocast is {logdet.dtype}, want float32"
    assert torch.isfinite(z).all() and torch.isfinite(logdet).all() and torch.isfinite(loss)
    torch.testing.assert_close(z.float(), z32, rtol=0.1, atol=0.1)
    torch.testing.assert_close(logdet, ld32, rtol=0.05, atol=0.2)
    loss.backward()
    for name, p in flow.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), f"grad of {name} under autocast"
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        flow.eval()
        x_back = flow.inverse(z32, c)[0] if cond else flow.inverse(z32)[0]
    torch.testing.assert_close(x_back.float(), x, rtol=0.1, atol=0.1)


@pytest.mark.parametrize("layer", ["AffineCoupling", "ActNormCoupling", "DoubleAffineCoupling"])
def test_autocast_bf16_through_layers(nn, layer):
    torch.manual_seed(0)
    mod = {"AffineCoupling": lambda: nn.AffineCoupling(6, torch.nn.Linear(3, 6)),
           "ActNormCoupling": lambda: nn.ActNormCoupling(6, torch.nn.Linear(3, 6)),
           "DoubleAffineCoupling": lambda: nn.DoubleAffineCoupling(6, 16)}[layer]()
    x = torch.randn(32, 6)
    mod(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, logdet = mod(x)
    assert logdet.dtype == torch.float32 and torch.isfinite(y).all() and torch.isfinite(logdet).all()
    y32, ld32 = mod(x)
    torch.testing.assert_close(y.float(), y32, rtol=0.1, atol=0.1)


def test_exp_scale_overflow_check_names_the_layer(nn):
    """With scale='exp' a huge s_raw overflows fp16; an opt-in check must raise naming the layer."""
    sub = torch.nn.Linear(3, 6).half()
    with torch.no_grad():
        sub.bias.fill_(20.0)  # exp(20) * |z| > fp16 max
    coupling = nn.AffineCoupling(6, sub, scale="exp").half()
    with nn.detect_overflow(), pytest.raises(FloatingPointError, match="AffineCoupling"):
        coupling(torch.randn(4, 6).half())
