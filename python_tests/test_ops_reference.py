"""The reference op (the spec) against first principles: Jacobian, inverse, autograd."""

import pytest
import torch

import flowkern
from flowkern.ops import CouplingConfig, coupling_forward_ref, coupling_inverse_ref

from .helpers import SCALES, make_case


def _cfg(kw, scale, **extra):
    return CouplingConfig(kw["split"], kw["passive"], scale, **extra)


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("passive", ["first", "second"])
@pytest.mark.parametrize("spatial", [(), (3,), (2, 3)])
def test_logdet_equals_slogdet_of_jacobian(scale, passive, spatial):
    x, s_raw, t, a, b, kw = make_case(B=2, C=5, spatial=spatial, passive=passive, dtype=torch.float64)
    cfg = _cfg(kw, scale, clamp=1.7)
    y, logdet = coupling_forward_ref(x, s_raw, t, a, b, cfg)
    for i in range(x.shape[0]):
        J = torch.autograd.functional.jacobian(
            lambda v: coupling_forward_ref(v[None], s_raw[i : i + 1], t[i : i + 1], a, b, cfg)[0][0], x[i]
        )
        n = x[i].numel()
        sign, logabs = torch.linalg.slogdet(J.reshape(n, n))
        torch.testing.assert_close(logdet[i], logabs, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("scale", SCALES)
def test_inverse_round_trip_and_antisymmetry(scale):
    x, s_raw, t, a, b, kw = make_case(B=4, C=11, spatial=(5,), split=4, dtype=torch.float64)
    cfg = _cfg(kw, scale, eps=1e-3 if scale == "sigmoid" else 0.0)
    y, logdet, err = coupling_forward_ref(x, s_raw, t, a, b, cfg, check=True)
    x2, logdet_inv = coupling_inverse_ref(y, s_raw, t, a, b, cfg)
    torch.testing.assert_close(x2, x, rtol=0, atol=1e-12)
    torch.testing.assert_close(logdet + logdet_inv, torch.zeros_like(logdet), rtol=0, atol=1e-12)
    assert err.shape == (4,) and err.max() < 1e-12


def test_scale_functions_match_formulas():
    r = torch.linspace(-30, 30, 101, dtype=torch.float64)[None, :, None].expand(1, 101, 1)
    for scale, expect in {
        "exp": r,
        "tanh": 2.0 * torch.tanh(r / 2.0),
        "atan": 2.0 * 0.636 * torch.atan(r / 2.0),
        "sigmoid": torch.log(torch.sigmoid(r + 2.0)),
    }.items():
        from flowkern.backends.reference import scale_ref

        got = scale_ref(r, CouplingConfig(1, scale=scale, clamp=2.0, atan_k=0.636))
        torch.testing.assert_close(got, expect, rtol=1e-12, atol=1e-12)


def test_passive_side_is_untouched_and_check_detects_tampering():
    x, s_raw, t, _, _, kw = make_case(B=3, C=6, actnorm=False, dtype=torch.float64)
    y, _ = flowkern.coupling_forward(x, s_raw, t, backend="reference", **kw)
    assert torch.equal(y[:, : kw["split"]], x[:, : kw["split"]])
    cfg = _cfg(kw, "tanh")
    y, _, err = coupling_forward_ref(x, s_raw, t, None, None, cfg, check=True)
    assert err.max() < 1e-12
