"""Flow / ConditionalFlow / build_flow: densities, sampling, conditioning, persistence, errors."""

from __future__ import annotations

import io
import math

import pytest
import torch

from flowkern.nn import (
    ActNorm,
    ConditionalFlow,
    DoubleAffineCoupling,
    Flow,
    InvConv1x1,
    MLPEmbedder,
    Shuffle,
    build_flow,
)

from .nn_support import brute_force_logdet


def test_log_prob_of_affine_flow_is_gaussian_density():
    m = ActNorm(3).double().eval()
    with torch.no_grad():
        m.loc.copy_(torch.tensor([0.5, -1.0, 2.0]))
        m.scale.copy_(torch.tensor([2.0, 0.5, -1.5]))
    flow = Flow([m])
    x = torch.randn(6, 3, dtype=torch.float64)
    ref = torch.distributions.Normal(-m.loc, 1 / m.scale.abs()).log_prob(x).sum(1)
    torch.testing.assert_close(flow.log_prob(x), ref)


def test_build_flow_structure_and_nll():
    torch.manual_seed(0)
    flow = build_flow(6, 3, 16, depth=1).double()
    assert isinstance(flow, Flow) and not isinstance(flow, ConditionalFlow)
    kinds = [type(b) for b in flow.blocks]
    assert kinds == [ActNorm, DoubleAffineCoupling, Shuffle] * 3
    assert len({tuple(b.perm.tolist()) for b in flow.blocks if isinstance(b, Shuffle)}) == 3
    x = torch.randn(10, 6, dtype=torch.float64)
    z, ld = flow(x)
    torch.testing.assert_close(flow.nll_loss(x), (0.5 * (z * z).sum(1) - ld).mean())
    torch.testing.assert_close(flow.log_prob(x), -0.5 * (z * z).sum(1) - 3 * math.log(2 * math.pi) + ld)


def test_flow_logdet_matches_jacobian_and_round_trip():
    torch.manual_seed(1)
    flow = Flow([ActNorm(5), DoubleAffineCoupling(5, 16, 1), InvConv1x1(5), Shuffle(5)]).double()
    flow(torch.randn(32, 5, dtype=torch.float64) * 2)  # actnorm init
    flow.eval()
    x = torch.randn(3, 5, dtype=torch.float64)
    z, ld = flow(x)
    torch.testing.assert_close(ld, brute_force_logdet(flow, x), rtol=1e-9, atol=1e-9)
    x2, ld_inv = flow.inverse(z)
    torch.testing.assert_close(x2, x, rtol=0, atol=1e-10)
    torch.testing.assert_close(ld_inv, -ld, rtol=0, atol=1e-10)


def test_sample_shape_temperature_and_event_shape():
    torch.manual_seed(2)
    flow = Flow([ActNorm(4), DoubleAffineCoupling(4, 8, 1)])
    with pytest.raises(RuntimeError, match="event_shape"):
        flow.sample(3)
    flow(torch.randn(16, 4))
    assert flow.event_shape == (4,)
    flow.eval()
    s = flow.sample(7)
    assert s.shape == (7, 4) and torch.isfinite(s).all()
    zero = flow.sample(2, temperature=0.0)
    torch.testing.assert_close(zero, flow.inverse(torch.zeros(2, 4))[0])
    with pytest.raises(ValueError, match="^x must have shape"):
        flow(torch.randn(2, 5))
    # CompVis (B, D, 1, 1) latents run through the same vector flow
    z4, ld4 = flow(torch.ones(2, 4, 1, 1))
    z2, ld2 = flow(torch.ones(2, 4))
    torch.testing.assert_close(z4.flatten(1), z2)
    torch.testing.assert_close(ld4, ld2)
    with pytest.raises(ValueError, match="^n must be"):
        flow.sample(-1)
    assert flow.sample(0).shape == (0, 4)  # an empty batch, as flow(torch.empty(0, 4))


def test_conditional_flow_embeds_once_and_needs_condition():
    torch.manual_seed(3)
    emb = MLPEmbedder(7, 4, hidden=16)
    calls = []
    emb.register_forward_hook(lambda *a: calls.append(1))
    flow = build_flow(6, 2, 16, depth=1, embedder=emb).double()
    assert isinstance(flow, ConditionalFlow) and flow.embedder is emb
    x, c = torch.randn(5, 6, dtype=torch.float64), torch.randn(5, 7, dtype=torch.float64)
    z, ld = flow(x, c)
    assert len(calls) == 1
    x2, _ = flow.inverse(z, c)
    torch.testing.assert_close(x2, x, rtol=0, atol=1e-10)
    # the condition changes the map
    z_other, _ = flow(x, c + 1)
    assert (z_other - z).abs().max() > 1e-3
    flow.nll_loss(x, c).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in emb.parameters())
    with pytest.raises(ValueError, match=r"^c \(the condition\)"):
        flow(x)
    with pytest.raises(ValueError, match="^c must have shape"):
        flow(x, torch.randn(5, 6, dtype=torch.float64))
    torch.testing.assert_close(flow(x, c[:, :, None, None])[0], z)  # (B, cond, 1, 1) condition
    s = flow.sample(5, c)
    assert s.shape == (5, 6)
    with pytest.raises(ValueError, match="batch size"):
        flow.sample(4, c)


def test_build_flow_conditional_without_embedder():
    flow = build_flow(4, 1, 8, cond_channels=3)
    assert isinstance(flow, ConditionalFlow)
    z, ld = flow(torch.randn(2, 4), torch.randn(2, 3))
    assert z.shape == (2, 4) and ld.shape == (2,)
    with pytest.raises(ValueError, match="cond_channels"):
        build_flow(4, 1, 8, cond_channels=3, embedder=MLPEmbedder(5, 2))
    with pytest.raises(ValueError, match="dim"):
        build_flow(1, 1, 8)


def test_whole_model_save_load_keeps_init_and_output():
    torch.manual_seed(4)
    flow = build_flow(6, 2, 16, depth=1)
    x = torch.randn(20, 6) * 3
    flow(x)
    buf = io.BytesIO()
    torch.save(flow, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    loaded.train()
    flow.train()
    y = torch.randn(20, 6) + 5
    torch.testing.assert_close(loaded(y)[0], flow(y)[0], rtol=0, atol=0)
    assert loaded.event_shape == (6,)


def test_training_reduces_nll():
    torch.manual_seed(5)
    data = torch.randn(512, 2) @ torch.tensor([[2.0, 0.0], [1.5, 0.3]]) + torch.tensor([1.0, -2.0])
    flow = build_flow(2, 2, 32, depth=1)
    opt = torch.optim.Adam(flow.parameters(), lr=3e-3)
    losses = []
    for step in range(40):
        loss = flow.nll_loss(data[torch.randint(0, 512, (128,))])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10 - 0.1


def test_flow_rejects_non_invertible_block():
    with pytest.raises(TypeError, match=r"blocks\[1\]"):
        Flow([ActNorm(3), torch.nn.Linear(3, 3)])


def test_conv_embedders_pooled_and_spatial():
    from flowkern.nn import ConditionalAffineCoupling, ConvEmbedder

    torch.manual_seed(6)
    pooled = ConvEmbedder(3, 5, hidden=8, n_down=1)
    flow = build_flow(4, 1, 8, depth=1, embedder=pooled)
    x, img = torch.randn(2, 4), torch.randn(2, 3, 8, 8)
    z, _ = flow(x, img)
    torch.testing.assert_close(flow.inverse(z, img)[0], x, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"^c must have shape \(B, 3, H, W\)"):
        flow(x, torch.randn(2, 4, 8, 8))
    # spatial map (B, 5, 4, 4) conditions a 4x4 image flow position by position
    spatial = ConvEmbedder(3, 5, hidden=8, n_down=1, pool=False)
    conv = torch.nn.Conv2d(2 + 5, 4, 3, padding=1)
    img_flow = ConditionalFlow([ConditionalAffineCoupling(4, 5, conv)], embedder=spatial)
    xi = torch.randn(2, 4, 4, 4)
    zi, ldi = img_flow(xi, img)
    assert zi.shape == xi.shape and ldi.shape == (2,)
    torch.testing.assert_close(img_flow.inverse(zi, img)[0], xi, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU"))])
@pytest.mark.parametrize("cond_channels", [0, 3])
def test_initialised_flow_compiles_fullgraph_with_eager_grads(cond_channels, device):
    """After ActNorm's init (or loading an initialised checkpoint) no layer reads a tensor on the
    host, so torch.compile(fullgraph=True) traces the whole NLL; its loss and grads match eager."""
    torch.manual_seed(6)
    flow = build_flow(6, 2, 16, depth=1, cond_channels=cond_channels).to(device)
    x, c = torch.randn(32, 6) * 2 + 1, (torch.randn(32, cond_channels) if cond_channels else None)
    x, c = x.to(device), (c.to(device) if cond_channels else None)
    flow.nll_loss(x, c)  # data-dependent init, eagerly
    fresh = build_flow(6, 2, 16, depth=1, cond_channels=cond_channels).to(device)
    fresh.load_state_dict(flow.state_dict())
    torch._dynamo.reset()
    compiled = torch.compile(lambda x, c: fresh.nll_loss(x, c), fullgraph=True)
    got = compiled(x, c)
    got.backward()
    want = flow.nll_loss(x, c)
    want.backward()
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    for (name, p), q in zip(flow.named_parameters(), fresh.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-6, msg=name)
