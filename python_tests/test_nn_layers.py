"""Every flowkern.nn layer: round trip, log-det vs the brute-force Jacobian, gradcheck,
bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from flowkern.nn import (
    MLP,
    ActNorm,
    ActNormCoupling,
    AffineCoupling,
    ConditionalAffineCoupling,
    DoubleAffineCoupling,
    InvConv1x1,
    Reverse,
    SeparateNets,
    Shuffle,
)

from .nn_support import brute_force_logdet


def _conv_subnet(c_in: int, c_out: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(c_in, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, c_out, 3, padding=1))


# name -> (factory, input shape (C, *S), condition shape or None)
CASES = {
    "actnorm_vec": (lambda: ActNorm(5), (5,), None),
    "actnorm_img": (lambda: ActNorm(3), (3, 2, 3), None),
    "coupling_odd_first": (lambda: AffineCoupling(7, MLP(3, 8, 16, 1)), (7,), None),
    "coupling_odd_second_atan": (
        lambda: AffineCoupling(7, MLP(4, 6, 16, 1), passive="second", scale="atan", clamp=1.5), (7,), None),
    "coupling_split2_exp": (lambda: AffineCoupling(5, MLP(2, 6, 8, 1), split=2, scale="exp"), (5,), None),
    "coupling_sigmoid_tuple": (
        lambda: AffineCoupling(5, SeparateNets(MLP(2, 3, 8, 0), MLP(2, 3, 8, 0)), scale="sigmoid", eps=1e-3),
        (5,), None),
    "coupling_img": (lambda: AffineCoupling(3, _conv_subnet(1, 4)), (3, 3, 2), None),
    "actnorm_coupling": (lambda: ActNormCoupling(5, MLP(2, 6, 8, 1)), (5,), None),
    "actnorm_coupling_img": (lambda: ActNormCoupling(4, _conv_subnet(2, 4), passive="second"), (4, 2, 3), None),
    "cond_coupling_vec": (lambda: ConditionalAffineCoupling(5, 3, MLP(5, 6, 8, 1)), (5,), (3,)),
    "cond_coupling_img": (lambda: ConditionalAffineCoupling(3, 2, _conv_subnet(3, 4)), (3, 2, 3), (2,)),
    "double": (lambda: DoubleAffineCoupling(7, 16, 1), (7,), None),
    "double_joint_net": (lambda: DoubleAffineCoupling(6, 16, 1, separate_nets=False), (6,), None),
    "double_cond": (lambda: DoubleAffineCoupling(5, 16, 1, cond_channels=3), (5,), (3,)),
    "double_latent": (lambda: DoubleAffineCoupling(4, 8, 0, scale="exp"), (4, 1, 1), None),
    "shuffle": (lambda: Shuffle(6, seed=3), (6,), None),
    "reverse_img": (lambda: Reverse(3), (3, 2, 2), None),
    "invconv_vec": (lambda: InvConv1x1(5), (5,), None),
    "invconv_img": (lambda: InvConv1x1(3, seed=1), (3, 2, 3), None),
}


def _make(name: str, B: int = 3, seed: int = 0):
    factory, shape, cshape = CASES[name]
    torch.manual_seed(seed)
    m = factory().double()
    x = torch.randn(B, *shape, dtype=torch.float64)
    c = None if cshape is None else torch.randn(B, *cshape, dtype=torch.float64)
    m.train()
    with torch.no_grad():
        m(torch.randn(8, *shape, dtype=torch.float64) * 2 + 0.5, None if c is None else torch.randn(8, *cshape,
                                                                                                        dtype=torch.float64))
    m.eval()
    return m, x, c


@pytest.mark.parametrize("name", sorted(CASES))
def test_round_trip_and_antisymmetry(name):
    m, x, c = _make(name, B=5)
    y, ld = m(x, c)
    assert y.shape == x.shape and ld.shape == (5,)
    x2, ld_inv = m.inverse(y, c)
    torch.testing.assert_close(x2, x, rtol=0, atol=1e-10)
    torch.testing.assert_close(ld + ld_inv, torch.zeros_like(ld), rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", sorted(CASES))
def test_round_trip_float32(name):
    m, x, c = _make(name, B=4)
    m = m.float()
    x = x.float()
    c = None if c is None else c.float()
    y, ld = m(x, c)
    assert ld.dtype == torch.float32
    torch.testing.assert_close(m.inverse(y, c)[0], x, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", sorted(CASES))
def test_logdet_matches_jacobian(name):
    m, x, c = _make(name, B=2)
    _, ld = m(x, c)
    torch.testing.assert_close(ld, brute_force_logdet(m, x, c), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradcheck_input_and_condition(name):
    m, x, c = _make(name, B=2)
    x.requires_grad_(True)
    inputs = (x,) if c is None else (x, c.requires_grad_(True))
    assert torch.autograd.gradcheck(lambda *v: m(*v), inputs, fast_mode=True)
    assert torch.autograd.gradcheck(lambda *v: m.inverse(*v), inputs, fast_mode=True)


@pytest.mark.parametrize("name", ["actnorm_coupling", "cond_coupling_vec", "invconv_vec", "actnorm_img"])
def test_gradcheck_parameters(name):
    m, x, c = _make(name, B=2)
    names, values = zip(*[(k, v.detach().clone().requires_grad_(True)) for k, v in m.named_parameters()])

    def run(*params):
        return torch.func.functional_call(m, dict(zip(names, params)), (x, c))

    assert torch.autograd.gradcheck(run, values, fast_mode=True)


def test_coupling_passes_subnet_output_whole_to_packed_op(monkeypatch):
    """One subnet output h goes to the packed op uncopied (one grad_h in backward); a
    subnet returning a pair (s_raw, t) uses the unpacked op."""
    import flowkern.nn.coupling as mod

    seen = {}
    real = mod.coupling_forward_packed

    def spy(x, h, a=None, b=None, **kw):
        seen["h"] = h
        return real(x, h, a, b, **kw)

    monkeypatch.setattr(mod, "coupling_forward_packed", spy)
    net = MLP(3, 6, 8, 1)
    outs = []
    net.register_forward_hook(lambda mod_, inp, out: outs.append(out))
    m = AffineCoupling(6, net)
    y, _ = m(torch.randn(4, 6))
    assert seen["h"] is outs[0]
    y.sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_odd_channels_extra_goes_to_second_part():
    m = AffineCoupling(7, MLP(3, 8, 8, 1))
    assert (m.c_pas, m.c_act) == (3, 4)
    m2 = AffineCoupling(7, MLP(4, 6, 8, 1), passive="second")
    assert (m2.c_pas, m2.c_act) == (4, 3)
    x = torch.randn(2, 7)
    y, _ = m(x)
    assert torch.equal(y[:, :3], x[:, :3])  # passive channels untouched
    y2, _ = m2(x)
    assert torch.equal(y2[:, 3:], x[:, 3:])


@pytest.mark.parametrize("name", sorted(CASES))
def test_wrong_channel_count_names_argument(name):
    m, x, c = _make(name, B=2)
    bad = torch.randn(2, x.shape[1] + 1, *x.shape[2:], dtype=x.dtype)
    with pytest.raises(ValueError, match=r"^x must have shape"):
        m(bad, c)
    with pytest.raises(ValueError, match=r"^y must have shape"):
        m.inverse(bad, c)
    with pytest.raises(TypeError, match=r"^x must be a torch.Tensor"):
        m(x.numpy(), c)


@pytest.mark.parametrize("name", ["cond_coupling_vec", "cond_coupling_img", "double_cond"])
def test_condition_missing_or_wrong_shape(name):
    m, x, c = _make(name, B=2)
    with pytest.raises(ValueError, match=r"^c \(the condition"):
        m(x)
    with pytest.raises(ValueError, match=r"^c must have shape"):
        m(x, torch.randn(2, c.shape[1] + 1, dtype=x.dtype))
    with pytest.raises(ValueError, match=r"^c must have shape"):
        m.inverse(x, torch.randn(3, c.shape[1], dtype=x.dtype))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="channels"):
        AffineCoupling(1, MLP(1, 1, 4))
    with pytest.raises(ValueError, match="split"):
        AffineCoupling(4, MLP(1, 6, 4), split=4)
    with pytest.raises(ValueError, match="scale"):
        AffineCoupling(4, MLP(2, 4, 4), scale="relu")
    with pytest.raises(ValueError, match="passive"):
        AffineCoupling(4, MLP(2, 4, 4), passive="middle")
    with pytest.raises(ValueError, match="cond_channels"):
        ConditionalAffineCoupling(4, 0, MLP(2, 4, 4))
    with pytest.raises(ValueError, match="perm"):
        from flowkern.nn import Permute

        Permute(torch.tensor([0, 0, 1]))


def test_subnet_wrong_output_names_subnet():
    m = AffineCoupling(6, MLP(3, 5, 8, 1))
    with pytest.raises(ValueError, match=r"^subnet must return \(B, 6"):
        m(torch.randn(2, 6))


def test_double_coupling_is_compvis_block():
    """Reproduce CompVis DoubleVectorCouplingBlock's forward from its two couplings by hand."""
    torch.manual_seed(0)
    m = DoubleAffineCoupling(6, 16, 1, scale="exp").double()
    x = torch.randn(4, 6, dtype=torch.float64)
    y, ld = m(x)
    logdet = 0
    h = x
    for i, cp in enumerate(m.couplings):
        if i % 2:
            h = torch.cat(torch.chunk(h, 2, dim=1)[::-1], dim=1)
        keep_in, apply = torch.chunk(h, 2, dim=1)
        nets = cp.subnet
        s, t = nets.s_net(keep_in), nets.t_net(keep_in)
        h = torch.cat((keep_in, apply * s.exp() + t), dim=1)
        logdet = logdet + s.sum(1)
    torch.testing.assert_close(y, h)
    torch.testing.assert_close(ld, logdet)


def test_invconv_weight_and_logdet():
    m = InvConv1x1(4, seed=2).double()
    W = m.weight()
    assert torch.allclose(torch.linalg.slogdet(W)[1], m.log_s.sum())
    x = torch.randn(3, 4, 2, 5, dtype=torch.float64)
    y, ld = m(x)
    torch.testing.assert_close(y, torch.einsum("ij,bjhw->bihw", W, x))
    torch.testing.assert_close(ld, torch.full((3,), 10 * m.log_s.sum().item(), dtype=torch.float64))


@pytest.mark.parametrize("name", sorted(CASES))
def test_save_load_without_reinit(name, tmp_path):
    m, x, c = _make(name, B=4)
    path = tmp_path / "m.pt"
    torch.save(m.state_dict(), path)
    fresh = CASES[name][0]().double()
    fresh.load_state_dict(torch.load(path))
    fresh.train()  # a re-initialising ActNorm would standardise this batch instead
    y_ref, ld_ref = m(x, c)
    y, ld = fresh(x, c)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
    torch.testing.assert_close(ld, ld_ref, rtol=0, atol=0)
