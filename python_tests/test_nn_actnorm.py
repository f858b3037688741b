"""ActNorm / ActNormCoupling data-dependent initialisation."""

from __future__ import annotations

import pytest
import torch

from flowkern.nn import MLP, ActNorm, ActNormCoupling


@pytest.mark.parametrize("shape", [(64, 5), (16, 3, 5, 7)])
def test_first_training_forward_standardises(shape):
    x = torch.randn(*shape, dtype=torch.float64) * torch.linspace(0.5, 3, shape[1], dtype=torch.float64).reshape(
        1, -1, *([1] * (len(shape) - 2))) + 4.0
    m = ActNorm(shape[1]).double()
    assert int(m.initialized) == 0
    y, ld = m(x)
    v = y.transpose(0, 1).reshape(shape[1], -1)
    torch.testing.assert_close(v.mean(1), torch.zeros(shape[1], dtype=torch.float64), atol=1e-10, rtol=0)
    torch.testing.assert_close(v.std(1), torch.ones(shape[1], dtype=torch.float64), atol=1e-5, rtol=0)
    assert int(m.initialized) == 1
    # the second call does not re-initialise
    y2, _ = m(x * 3)
    view = (1, -1, *([1] * (len(shape) - 2)))
    torch.testing.assert_close(y2, m.scale.reshape(view) * (3 * x + m.loc.reshape(view)))
    torch.testing.assert_close(ld, torch.full_like(ld, torch.log(m.scale).sum().item() * (v.shape[1] / shape[0])))


def test_eval_mode_does_not_initialise():
    m = ActNorm(4).eval()
    x = torch.randn(8, 4) * 3
    y, ld = m(x)
    assert int(m.initialized) == 0
    torch.testing.assert_close(y, x)
    torch.testing.assert_close(ld, torch.zeros(8))


def test_initialized_flag_is_a_saved_buffer():
    m = ActNorm(3)
    m(torch.randn(10, 3))
    state = m.state_dict()
    assert set(state) == {"loc", "scale", "initialized"} and int(state["initialized"]) == 1
    fresh = ActNorm(3)
    fresh.load_state_dict(state)
    x = torch.randn(10, 3) * 5
    torch.testing.assert_close(fresh(x)[0], m(x)[0])
    assert torch.equal(fresh.loc, m.loc)
    # loading an uninitialised state re-arms the data-dependent init (the Python mirror follows the buffer)
    m.load_state_dict(ActNorm(3).state_dict())
    z, _ = m(x)
    assert int(m.initialized) == 1
    torch.testing.assert_close(z.mean(0), torch.zeros(3), atol=1e-5, rtol=0)


def test_inverse_init_raises_unless_allowed():
    m = ActNorm(3)
    with pytest.raises(RuntimeError, match="allow_inverse_init"):
        m.inverse(torch.randn(4, 3))
    m2 = ActNorm(3, allow_inverse_init=True)
    y = torch.randn(32, 3) * 2 + 1
    x, _ = m2.inverse(y)
    assert int(m2.initialized) == 1
    torch.testing.assert_close(m2(x)[0], y, atol=1e-5, rtol=1e-5)


def test_actnorm_coupling_initialises_fused_actnorm():
    torch.manual_seed(0)
    m = ActNormCoupling(6, MLP(3, 6, 8, 1)).double()
    x = torch.randn(256, 6, dtype=torch.float64) * 3 + 2
    y, ld = m(x)
    assert int(m.actnorm.initialized) == 1
    # passive channels are exactly the normalised input
    torch.testing.assert_close(y[:, :3].mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-10, rtol=0)
    torch.testing.assert_close(y[:, :3].std(0), torch.ones(3, dtype=torch.float64), atol=1e-5, rtol=0)
    # log-det contains the actnorm term: compare with actnorm followed by a plain coupling
    from flowkern.nn import ActNorm, AffineCoupling

    an = ActNorm(6).double().eval()
    an.load_state_dict(m.actnorm.state_dict())
    cp = AffineCoupling(6, m.subnet).double()
    z, ld1 = an(x)
    y2, ld2 = cp(z)
    torch.testing.assert_close(y, y2)
    torch.testing.assert_close(ld, ld1 + ld2)
