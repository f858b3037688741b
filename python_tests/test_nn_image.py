"""Image flow layers and multi-scale flows: Squeeze orders, RealNVP masks and checkerboard
coupling, the folded Glow step, factor-out priors, MultiScaleFlow and its builders — round trip,
log-det vs the brute-force Jacobian, gradcheck in float64 on tiny images, bad shapes named."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from flowkern.check import certify
from flowkern.nn import (
    ActNorm,
    AffineCoupling,
    CheckerboardCoupling,
    ConditionalAffineCoupling,
    ConvSubnet,
    GlowStep,
    InvConv1x1,
    LearnedPrior,
    MultiScaleFlow,
    OneHot,
    Split,
    Squeeze,
    bits_per_dim,
    build_glow,
    build_realnvp,
    channel_mask,
    checkerboard_mask,
    dequantize,
)

D64 = torch.float64


def _perturb(model: nn.Module, scale: float = 0.1, seed: int = 0) -> nn.Module:
    """Move the zero-initialised layers off the identity, so every path is exercised."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


# ---- Squeeze -------------------------------------------------------------------------------
@pytest.mark.parametrize("order", ["glow", "checkerboard"])
def test_squeeze_channel_order_round_trip_and_zero_logdet(order):
    x = torch.randn(2, 3, 6, 10, dtype=D64)
    sq = Squeeze(order)
    y, ld = sq(x)
    assert y.shape == (2, 12, 3, 5) and torch.equal(ld, torch.zeros(2, dtype=D64))
    offsets = [(0, 0), (1, 1), (0, 1), (1, 0)]
    for c in range(3):
        for i in range(2):
            for j in range(2):
                k = 4 * c + 2 * i + j if order == "glow" else offsets.index((i, j)) * 3 + c
                assert torch.equal(y[:, k], x[:, c, i::2, j::2]), (order, c, i, j)
    back, ld_inv = sq.inverse(y)
    assert torch.equal(back, x) and torch.equal(ld_inv, torch.zeros(2, dtype=D64))


def test_squeeze_checkerboard_halves_are_the_two_colours():
    x = torch.arange(2 * 4 * 6, dtype=D64).reshape(1, 2, 4, 6)
    y, _ = Squeeze("checkerboard")(x)
    even = x[checkerboard_mask(4, 6, 0, D64).expand_as(x).bool()]
    assert torch.equal(torch.sort(y[:, :4].flatten()).values, torch.sort(even).values)


@pytest.mark.parametrize("shape", [(1, 3, 5, 4), (1, 3, 4, 7), (2, 3, 3, 3)])
def test_squeeze_odd_size_error_names_the_shape(shape):
    with pytest.raises(ValueError, match=r"even height and width.*" + str(shape).replace("(", r"\(").replace(")", r"\)")):
        Squeeze()(torch.randn(*shape))


def test_squeeze_rejects_non_images_and_bad_order():
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        Squeeze()(torch.randn(2, 4, 4))
    with pytest.raises(ValueError, match="order"):
        Squeeze("pixelshuffle")


# ---- masks and the checkerboard coupling ----------------------------------------------------
def test_masks():
    b = checkerboard_mask(3, 4, 0)
    assert b.shape == (1, 1, 3, 4) and b[0, 0, 0, 0] == 1 and b[0, 0, 0, 1] == 0 and b[0, 0, 1, 0] == 0
    assert torch.equal(checkerboard_mask(3, 4, 1), 1 - b)
    m = channel_mask(5, 0)
    assert m.flatten().tolist() == [1, 1, 0, 0, 0]
    assert channel_mask(5, 1).flatten().tolist() == [0, 0, 1, 1, 1]
    with pytest.raises(ValueError, match="parity"):
        checkerboard_mask(2, 2, 2)


def _masked_reference(x, net, parity, clamp, cond=None):
    """RealNVP's checkerboard coupling written with the mask, at full resolution."""
    b = checkerboard_mask(x.shape[2], x.shape[3], parity, x.dtype)
    inp = x * b
    if cond is not None:
        inp = torch.cat((inp, cond[:, :, None, None].expand(-1, -1, *x.shape[2:])), 1)
    h = net(inp)
    s = clamp * torch.tanh(h[:, :x.shape[1]] / clamp)
    y = b * x + (1 - b) * (x * torch.exp(s) + h[:, x.shape[1]:])
    return y, ((1 - b) * s).flatten(1).sum(1)


@pytest.mark.parametrize("parity", [0, 1])
@pytest.mark.parametrize("conditional", [False, True])
def test_checkerboard_coupling_equals_masked_formula(parity, conditional):
    torch.manual_seed(parity)
    C, cond = 3, (2 if conditional else 0)
    net = _perturb(ConvSubnet(C + cond, 2 * C, 8).double(), 0.3)
    layer = CheckerboardCoupling(C, net, parity, cond_channels=cond, clamp=1.5).double()
    x = torch.randn(2, C, 4, 6, dtype=D64)
    c = torch.randn(2, cond, dtype=D64) if conditional else None
    sq = Squeeze("checkerboard")
    y_sq, ld = layer(sq(x)[0], c)
    want, want_ld = _masked_reference(x, net, parity, 1.5, c)
    torch.testing.assert_close(sq.inverse(y_sq)[0], want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ld, want_ld, rtol=1e-12, atol=1e-12)
    back, ld_inv = layer.inverse(y_sq, c)
    torch.testing.assert_close(back, sq(x)[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ld_inv, -ld)
    torch.testing.assert_close(ld, _jacobian_logdet(layer, sq(x)[0], c))


def test_checkerboard_subnet_output_shape_is_checked():
    layer = CheckerboardCoupling(2, nn.Conv2d(2, 3, 3, padding=1))
    with pytest.raises(ValueError, match=r"\(B, 4, H, W\)"):
        layer(torch.randn(1, 8, 2, 2))


# ---- Glow step ------------------------------------------------------------------------------
def _glow_step(C, cond=0, seed=0):
    torch.manual_seed(seed)
    step = GlowStep(C, 8, cond_channels=cond, seed=seed).double()
    step(torch.randn(16, C, 3, 5, dtype=D64) * 2 + 1, torch.randn(16, cond, dtype=D64) if cond else None)  # init
    return _perturb(step, 0.2, seed)


@pytest.mark.parametrize("C,cond", [(3, 0), (5, 0), (4, 2)])
def test_glow_step_equals_unfused_actnorm_invconv_coupling(C, cond):
    """The folded conv + fused op equals ActNorm -> InvConv1x1 -> AffineCoupling(sigmoid) run apart."""
    step = _glow_step(C, cond)
    x = torch.randn(3, C, 3, 5, dtype=D64)
    c = torch.randn(3, cond, dtype=D64) if cond else None
    an = ActNorm(C).double()
    an.load_state_dict(step.actnorm.state_dict())
    ic = InvConv1x1(C).double()
    ic.load_state_dict(step.invconv.state_dict())
    h1, l1 = an(x)
    h2, l2 = ic(h1)
    h3, l3 = step.coupling(h2, c)
    y, ld = step(x, c)
    torch.testing.assert_close(y, h3, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ld, l1 + l2 + l3, rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("C,cond", [(3, 0), (4, 2)])
def test_glow_step_round_trip_logdet_gradcheck(C, cond):
    step = _glow_step(C, cond, seed=1).eval()
    x = torch.randn(2, C, 3, 5, dtype=D64)
    c = torch.randn(2, cond, dtype=D64) if cond else None
    y, ld = step(x, c)
    back, ld_inv = step.inverse(y, c)
    torch.testing.assert_close(back, x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ld_inv, -ld)
    torch.testing.assert_close(ld, _jacobian_logdet(step, x, c), rtol=1e-10, atol=1e-10)
    inputs = (x.clone().requires_grad_(True),) + ((c.clone().requires_grad_(True),) if cond else ())
    assert torch.autograd.gradcheck(lambda *v: step(*v), inputs, fast_mode=True)


def test_glow_step_init_normalises_its_input():
    step = GlowStep(4, 8)
    x = torch.randn(64, 4, 4, 4) * 3 + 2
    step(x)
    u = step.actnorm(x)[0]
    torch.testing.assert_close(u.mean((0, 2, 3)), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(u.std((0, 2, 3)), torch.ones(4), atol=1e-3, rtol=0)


def test_glow_step_bad_input():
    with pytest.raises(ValueError, match="channels"):
        GlowStep(1, 8)
    with pytest.raises(ValueError, match=r"\(B, 4, \*S\)"):
        GlowStep(4, 8)(torch.randn(2, 3, 4, 4))


# ---- factor-out and priors ------------------------------------------------------------------
def test_learned_split_is_the_gaussian_of_its_conv():
    torch.manual_seed(0)
    split = _perturb(Split(6, prior="learned").double(), 0.3)
    x = torch.randn(2, 6, 3, 5, dtype=D64)
    kept, eps, ld = split(x)
    h = split.coupling.subnet.conv(x[:, :3])
    mean, log_std = h[:, :3], h[:, 3:]
    torch.testing.assert_close(kept, x[:, :3])
    torch.testing.assert_close(eps, (x[:, 3:] - mean) * torch.exp(-log_std))
    torch.testing.assert_close(ld, -log_std.flatten(1).sum(1))
    back, ld_inv = split.inverse(kept, eps)
    torch.testing.assert_close(back, x)
    torch.testing.assert_close(ld_inv, -ld)


def test_normal_split_and_errors():
    split = Split(5, keep=2, prior="normal")
    x = torch.randn(2, 5, 2, 2)
    kept, eps, ld = split(x)
    assert torch.equal(kept, x[:, :2]) and torch.equal(eps, x[:, 2:]) and torch.equal(ld, torch.zeros(2))
    with pytest.raises(ValueError, match=r"\(B, 5, \*S\)"):
        split(torch.randn(2, 4, 2, 2))
    with pytest.raises(ValueError, match="prior"):
        Split(4, prior="laplace")
    with pytest.raises(ValueError, match="cond_channels"):
        Split(4, prior="normal", cond_channels=2)


def test_learned_prior_is_a_gaussian_density():
    torch.manual_seed(1)
    prior = _perturb(LearnedPrior(3, cond_channels=2).double(), 0.5)
    z, c = torch.randn(4, 3, 2, 3, dtype=D64), torch.randn(4, 2, dtype=D64)
    eps, ld = prior(z, c)
    h = prior.cond(c)
    mean = prior.mean + h[:, :3]
    std = torch.exp(prior.log_std + h[:, 3:])
    want = torch.distributions.Normal(mean[:, :, None, None], std[:, :, None, None]).log_prob(z).flatten(1).sum(1)
    got = MultiScaleFlow.standard_normal_log_prob(eps) + ld
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(prior.inverse(eps, c)[0], z)


# ---- multi-scale flows ----------------------------------------------------------------------
def _glow(shape=(2, 4, 4), cond=0, classes=0, memory_saving=False, levels=2, depth=2):
    torch.manual_seed(0)
    flow = build_glow(shape, levels=levels, depth=depth, hidden=8, num_classes=classes, cond_channels=cond,
                      memory_saving=memory_saving).double()
    x = torch.rand(8, *shape, dtype=D64)
    c = _cond(8, cond, classes)
    flow(x, c)
    return _perturb(flow, 0.05), x, c


def _cond(n, cond, classes):
    if classes:
        return torch.arange(n) % classes
    return torch.randn(n, cond, dtype=D64) if cond else None


def _realnvp(shape=(2, 4, 4), cond=0, classes=0):
    torch.manual_seed(0)
    flow = build_realnvp(shape, levels=2, hidden=8, n_checker=2, n_channel=2, n_final=2, num_classes=classes,
                         cond_channels=cond).double()
    x = torch.rand(8, *shape, dtype=D64)
    c = _cond(8, cond, classes)
    flow(x, c)
    return _perturb(flow, 0.05), x, c


def _jacobian_logdet(fn, x, c=None):
    """log|det J| per sample of fn (output a tensor or a list of latents), from one backward of
    the sample repeated D times (eval mode)."""
    out = []
    D = x[0].numel()
    for i in range(x.shape[0]):
        xi = x[i:i + 1].expand(D, *x.shape[1:]).clone().requires_grad_(True)
        ci = None if c is None else c[i:i + 1].expand(D, *c.shape[1:])
        y = fn(xi, ci)[0]
        y = torch.cat([z.flatten(1) for z in y], 1) if isinstance(y, (list, tuple)) else y.flatten(1)
        (y * torch.eye(D, dtype=y.dtype)).sum().backward()
        out.append(torch.linalg.slogdet(xi.grad.reshape(D, D))[1])
    return torch.stack(out)


@pytest.mark.parametrize("kind", ["glow", "glow_classes", "glow_vector", "realnvp", "realnvp_classes"])
def test_multiscale_round_trip_and_logdet_vs_jacobian(kind):
    make = _realnvp if kind.startswith("realnvp") else _glow
    flow, x, c = make(classes=3 if kind.endswith("classes") else 0, cond=4 if kind.endswith("vector") else 0)
    flow.eval()
    x, c = x[:3], None if c is None else c[:3]
    latents, ld = flow(x, c)
    assert [tuple(z.shape[1:]) for z in latents] == flow.latent_shapes() == [(4, 2, 2), (16, 1, 1)]
    back, ld_inv = flow.inverse(latents, c)
    torch.testing.assert_close(back, x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ld_inv, -ld)
    torch.testing.assert_close(ld, _jacobian_logdet(flow, x, c), rtol=1e-10, atol=1e-10)
    assert flow.reconstruction_error(x, c) < 1e-12


def test_multiscale_gradcheck_float64():
    flow, x, c = _glow(cond=2)
    flow.eval()

    def fn(v, cc):
        latents, ld = flow(v, cc)
        return (*latents, ld)

    assert torch.autograd.gradcheck(fn, (x[:2].clone().requires_grad_(True), c[:2].clone().requires_grad_(True)),
                                    fast_mode=True)


def test_log_prob_bits_per_dim_and_sampling():
    flow, x, _ = _glow()
    flow.eval()
    latents, ld = flow(x)
    want = ld + sum(torch.distributions.Normal(0.0, 1.0).log_prob(z).flatten(1).sum(1) for z in latents)
    torch.testing.assert_close(flow.log_prob(x), want)
    torch.testing.assert_close(flow.nll_loss(x), -want.mean())
    D = x[0].numel()
    torch.testing.assert_close(flow.bits_per_dim(x), -want / (D * math.log(2)) + 8)
    torch.testing.assert_close(bits_per_dim(want, D, n_bits=5), -want / (D * math.log(2)) + 5)
    torch.manual_seed(3)
    s = flow.sample(5, temperature=0.7)
    assert s.shape == (5, 2, 4, 4) and torch.isfinite(s).all()
    z0 = flow.sample(2, temperature=0.0)  # T = 0: the mode of every latent, deterministic
    torch.testing.assert_close(z0, flow.inverse([torch.zeros(2, *sh, dtype=D64) for sh in flow.latent_shapes()])[0])
    # sampling is the inverse of the forward at the drawn latents
    torch.manual_seed(4)
    s2 = flow.sample(3)
    torch.manual_seed(4)
    lat = [torch.randn(3, *sh, dtype=D64) for sh in flow.latent_shapes()]
    torch.testing.assert_close(s2, flow.inverse(lat)[0])
    torch.testing.assert_close(torch.cat([z.flatten(1) for z in flow(s2)[0]], 1), torch.cat([z.flatten(1) for z in lat], 1))


def test_class_conditional_sampling_and_one_hot():
    flow, x, c = _glow(classes=3)
    flow.eval()
    s = flow.sample(4, torch.tensor([0, 1, 2, 0]), temperature=0.5)
    assert s.shape == (4, 2, 4, 4)
    oh = OneHot(3)
    assert torch.equal(oh(torch.tensor([2, 0])), torch.tensor([[0.0, 0, 1], [1, 0, 0]]))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        oh(torch.tensor([3]))
    with pytest.raises(ValueError, match="batch size n=2"):
        flow.sample(2, torch.tensor([0, 1, 2]))


def test_dequantize():
    g = torch.Generator().manual_seed(0)
    k = torch.randint(0, 256, (4, 3, 5, 5), dtype=torch.uint8)
    x = dequantize(k, generator=g)
    assert x.dtype == torch.float32 and (x >= k.float() / 256).all() and (x < (k.float() + 1) / 256).all()
    with pytest.raises(ValueError, match=r"\[0, 31\]"):
        dequantize(k, n_bits=5)


@pytest.mark.parametrize("shape,levels", [((3, 6, 8), 2), ((3, 8, 12), 3), ((3, 7, 8), 1)])
def test_builders_name_shapes_that_do_not_squeeze(shape, levels):
    for build in (build_glow, build_realnvp):
        with pytest.raises(ValueError, match=r"divisible by 2\*\*levels.*H=" + str(shape[1])):
            build(shape, levels=levels, hidden=4)


def test_forward_errors_name_the_argument_and_shape():
    flow = build_glow((3, 8, 8), levels=2, depth=1, hidden=4)
    with pytest.raises(ValueError, match=r"3 channels.*\(2, 4, 8, 8\)"):
        flow(torch.rand(2, 4, 8, 8))
    with pytest.raises(ValueError, match=r"\(3, 6, 8\).*Squeeze.*even height"):
        flow(torch.rand(2, 3, 6, 8))
    with pytest.raises(ValueError, match="c must be None"):
        flow(torch.rand(2, 3, 8, 8), torch.zeros(2, 3))
    cflow = build_glow((3, 8, 8), levels=2, depth=1, hidden=4, num_classes=3)
    with pytest.raises(ValueError, match="c .the condition. is required"):
        cflow(torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match="latents must be a list of 2"):
        flow.inverse([torch.zeros(2, 6, 4, 4)])
    with pytest.raises(ValueError, match="num_classes.*cond_channels"):
        build_glow((3, 8, 8), num_classes=2, cond_channels=3)
    with pytest.raises(TypeError, match=r"levels\[0\]\[0\]"):
        MultiScaleFlow([[nn.Conv2d(3, 3, 1)]])


def test_realnvp_structure_and_glow_split_priors():
    flow = build_realnvp((3, 8, 8), levels=2, hidden=4)
    kinds = [type(m).__name__ for m in flow.levels[0]]
    assert kinds.count("CheckerboardCoupling") == 3 and kinds.count("AffineCoupling") == 3
    assert kinds[0] == "Squeeze" and kinds[-1] == "Split" and flow.levels[0][0].order == "checkerboard"
    assert [type(m).__name__ for m in flow.levels[1]].count("CheckerboardCoupling") == 4
    glow = build_glow((3, 8, 8), levels=3, depth=2, hidden=4, split_prior="normal", learn_top=False)
    assert glow.prior is None and all(m.prior == "normal" for lvl in glow.levels for m in lvl if isinstance(m, Split))
    assert glow.latent_shapes() == [(6, 4, 4), (12, 2, 2), (48, 1, 1)]


@pytest.mark.parametrize("make", [_glow, _realnvp])
def test_certify_accepts_multiscale_flows(make):
    flow, x, c = make(classes=2)
    report = certify(flow.float(), x[:2].float(), c[:2])
    assert report.passed, str(report)
    assert report.jacobian_logdet_error is not None and report.jacobian_logdet_error < 1e-8
    assert report.fused_check  # the couplings' in-pass checks ran


def test_certify_catches_a_broken_inverse():
    flow, x, _ = _glow()
    flow.float()
    step = flow.levels[0][1]
    original = step.inverse
    step.inverse = lambda y, c=None: (original(y, c)[0] * 1.01, original(y, c)[1])
    report = certify(flow, x[:2].float())
    assert not report.passed and any("round-trip" in f for f in report.failures)


def test_check_cli_on_a_saved_class_conditional_glow(tmp_path, capsys):
    import argparse

    from flowkern.check import run

    flow, x, c = _glow(classes=3)
    path = tmp_path / "glow.pt"
    torch.save(flow.float(), path)
    args = argparse.Namespace(path=str(path), input_shape=None, cond_shape=None, batch=2, dtype=None, seed=0)
    assert run(args) == 0
    assert "PASSED" in capsys.readouterr().out
