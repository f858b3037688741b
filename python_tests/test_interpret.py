"""IIN (factor loss, factor sizes, transformer ops, sketch pairs), invariance sampling (the layering
of the interpretation layer is checked in test_layering)."""

from __future__ import annotations

import math

import pytest
import torch

from flowkern.interpret import (
    FactorLoss,
    FactorTransformer,
    estimate_factor_sizes,
    fit_iin,
    pair_correlation_scores,
    sample_invariances,
    sketch_pairs,
)
from flowkern.translate import Net2Net


@pytest.fixture(autouse=True)
def one_thread():
    """The small flows here run fastest single-threaded (thread contention on the 2-core CI box)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_factor_loss_hand_computed():
    sizes = {"a": 1, "b": 1, "residual": 1}
    ua, ub = torch.tensor([[1.0, 2.0, 0.0]]), torch.tensor([[0.5, 1.0, 1.0]])
    la, lb = torch.tensor([0.3]), torch.tensor([-0.2])
    loss = FactorLoss(sizes, rho=0.5)(ua, la, ub, lb, torch.tensor([0]))
    # nll_a = 0.5*(1+4) = 2.5; factor a: (0.5-0.5*1)^2/(2*0.75) + 0.5*log(0.75) = 0.5*log(0.75)
    # factor b and residual of b: 0.5*1 + 0.5*1 = 1.0
    expected = 2.5 - 0.3 + 0.5 * math.log(0.75) + 1.0 + 0.2
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    # shared = 1 (factor b): factor a of b is N(0,1): 0.125; factor b: (1-0.5*2)^2/1.5 + 0.5 log .75 = 0.5 log .75
    loss_b = FactorLoss(sizes, rho=0.5)(ua, la, ub, lb, torch.tensor([1]))
    assert loss_b.item() == pytest.approx(2.5 - 0.3 + 0.125 + 0.5 * math.log(0.75) + 0.5 + 0.2, abs=1e-6)


def test_factor_loss_is_joint_gaussian_nll():
    """Loss + D log(2 pi) equals -log N((u_a, u_b); 0, Sigma) with corr rho on the shared factor."""
    torch.manual_seed(0)
    sizes, rho, n = {"f": 2, "g": 3, "residual": 2}, 0.9, 5
    ua, ub = torch.randn(n, 7, dtype=torch.float64), torch.randn(n, 7, dtype=torch.float64)
    shared = torch.tensor([0, 1, -1, 0, 1])
    zero = torch.zeros(n, dtype=torch.float64)
    loss_fn = FactorLoss(sizes, rho)
    for i in range(n):
        cov = torch.eye(14, dtype=torch.float64)
        if shared[i] >= 0:
            lo, hi = (0, 2) if shared[i] == 0 else (2, 5)
            for j in range(lo, hi):
                cov[j, 7 + j] = cov[7 + j, j] = rho
        mvn = torch.distributions.MultivariateNormal(torch.zeros(14, dtype=torch.float64), cov)
        nll = -mvn.log_prob(torch.cat([ua[i], ub[i]]))
        got = loss_fn(ua[i:i + 1], zero[:1], ub[i:i + 1], zero[:1], shared[i:i + 1]) + 7 * math.log(2 * math.pi)
        assert got.item() == pytest.approx(nll.item(), rel=1e-10)


def test_factor_loss_bad_arguments():
    with pytest.raises(ValueError, match="rho"):
        FactorLoss({"a": 1, "residual": 1}, rho=1.0)
    loss = FactorLoss({"a": 1, "residual": 1})
    with pytest.raises(ValueError, match="shared"):
        loss(torch.zeros(2, 2), torch.zeros(2), torch.zeros(2, 2), torch.zeros(2), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="u_a"):
        loss(torch.zeros(2, 3), torch.zeros(2), torch.zeros(2, 3), torch.zeros(2), torch.tensor([0, 0]))


def test_factor_size_estimation_known_answer():
    g = torch.Generator().manual_seed(0)
    n, d = 20000, 10
    za = torch.randn(n, d, generator=g)
    # factor A shares dims 0-2 exactly, factor B dims 3-4; everything else independent
    zb_a = torch.randn(n, d, generator=g)
    zb_a[:, :3] = za[:, :3]
    zb_b = torch.randn(n, d, generator=g)
    zb_b[:, 3:5] = za[:, 3:5]
    pairs = {"A": (za, zb_a), "B": (za, zb_b)}
    scores = pair_correlation_scores(pairs)
    assert scores["A"] == pytest.approx(3.0, abs=0.15) and scores["B"] == pytest.approx(2.0, abs=0.15)
    # softmax(3, 2, 1) * 10 = (6.65, 2.45, 0.90) -> floor 6, 2, remainder 2
    assert estimate_factor_sizes(pairs) == {"A": 6, "B": 2, "residual": 2}
    with pytest.raises(ValueError, match="pairs"):
        pair_correlation_scores({"A": (za, zb_a[:, :3])})


@pytest.fixture(scope="module")
def transformer():
    torch.manual_seed(0)
    ft = FactorTransformer(8, {"digit": 3, "colour": 2}, n_blocks=2, hidden=16)
    with torch.no_grad():
        ft(torch.randn(64, 8))  # actnorm init
    return ft.eval()


def test_transformer_layout_and_roundtrip(transformer):
    assert transformer.sizes == {"digit": 3, "colour": 2, "residual": 3}
    z = torch.randn(9, 8)
    with torch.no_grad():
        f = transformer.encode(z)
        assert [v.shape[1] for v in f.values()] == [3, 2, 3]
        assert torch.allclose(transformer.decode(f), z, atol=1e-5)


def test_swap_and_interpolate(transformer):
    g = torch.Generator().manual_seed(3)
    za, zb = torch.randn(7, 8, generator=g), torch.randn(7, 8, generator=g)
    with torch.no_grad():
        fa, fb = transformer.encode(za), transformer.encode(zb)
        fs = transformer.encode(transformer.swap(za, zb, "colour"))
        assert torch.allclose(fs["colour"], fb["colour"], atol=1e-4)
        assert torch.allclose(fs["digit"], fa["digit"], atol=1e-4)
        assert torch.allclose(fs["residual"], fa["residual"], atol=1e-4)
        path = transformer.interpolate(za, zb, "digit", steps=5)
        assert path.shape == (5, 7, 8)
        assert torch.allclose(path[0], za, atol=1e-4)
        mid = transformer.encode(path[2])
        assert torch.allclose(mid["digit"], 0.5 * (fa["digit"] + fb["digit"]), atol=1e-4)
        assert torch.allclose(mid["colour"], fa["colour"], atol=1e-4)
    with pytest.raises(ValueError, match="factor"):
        transformer.swap(za, zb, "style")
    with pytest.raises(ValueError, match="steps"):
        transformer.interpolate(za, zb, "digit", steps=1)
    with pytest.raises(TypeError, match="steps"):
        transformer.interpolate(za, zb, "digit", steps=True)


def test_transformer_bad_sizes():
    with pytest.raises(ValueError, match="dim"):
        FactorTransformer(4, {"a": 3, "b": 2})
    with pytest.raises(ValueError, match="residual"):
        FactorTransformer(4, {"residual": 2})
    with pytest.raises(TypeError, match="factor_sizes"):
        FactorTransformer(4, [2])
    with pytest.raises(ValueError, match=r"factor_sizes\['a'\]"):
        FactorTransformer(4, {"a": 0})
    with pytest.raises(TypeError, match=r"factor_sizes\['a'\]"):
        FactorTransformer(4, {"a": 1.5})


def test_fit_iin_disentangles_a_toy_factor():
    """Pairs share the latent variable s mixed into all 4 dims; the learned factor must recover it."""
    torch.manual_seed(0)
    mix = torch.linalg.qr(torch.randn(4, 4))[0]

    def data(n, gen):
        s = torch.randn(n, 1, generator=gen)
        return s, torch.cat([s, torch.randn(n, 3, generator=gen)], 1) @ mix

    def pairs(gen):
        s, za = data(128, gen)
        zb = torch.cat([s, torch.randn(128, 3, generator=gen)], 1) @ mix
        return za, zb, torch.zeros(128, dtype=torch.long)

    ft = FactorTransformer(4, {"s": 1}, n_blocks=2, hidden=32)
    losses = fit_iin(ft, pairs, 150, lr=3e-3)
    assert sum(losses[-20:]) < sum(losses[:20])
    s, z = data(2000, torch.Generator().manual_seed(9))
    with torch.no_grad():
        f = ft.encode(z)
    corr = torch.corrcoef(torch.cat([s, f["s"], f["residual"]], 1).T)[0, 1:]
    assert corr[0].abs() > 0.9
    assert corr[1:].abs().max() < 0.2


def test_fit_iin_noise_bounds_the_loss_on_a_degenerate_latent():
    """z = (s, r, 0.001 e): without noise the flow exploits the near-constant dimension (its NLL can
    reach log(0.001) + 1/2 per sample); with noise 0.1 it costs at least about log(0.1) + 1/2."""
    def pairs(gen):
        s = torch.randn(128, 1, generator=gen)
        za = torch.cat([s, torch.randn(128, 1, generator=gen), 1e-3 * torch.randn(128, 1, generator=gen)], 1)
        zb = torch.cat([s, torch.randn(128, 1, generator=gen), 1e-3 * torch.randn(128, 1, generator=gen)], 1)
        return za, zb, torch.zeros(128, dtype=torch.long)

    final = {}
    for noise in (0.0, 0.1):
        torch.manual_seed(0)
        ft = FactorTransformer(3, {"s": 1}, n_blocks=2, hidden=32)
        final[noise] = sum(fit_iin(ft, pairs, 150, lr=3e-3, noise=noise)[-20:]) / 20
    assert math.isfinite(final[0.0]) and math.isfinite(final[0.1])
    assert final[0.1] > final[0.0] + 1.0
    assert final[0.1] > 2 * (math.log(0.1) + 0.5) - 1.0  # two samples per pair; the s/r dims cost more
    with pytest.raises(ValueError, match="noise"):
        fit_iin(ft, pairs, 1, noise=-0.1)


def test_sketch_pairs_share_the_example():
    examples = torch.stack([torch.zeros(1, 4, 4), torch.ones(1, 4, 4)])

    def nuisance(x, gen):
        return x.expand(-1, 3, -1, -1) * (0.5 + torch.rand(len(x), 3, 1, 1, generator=gen))

    xa, xb, k = sketch_pairs(examples, 50, nuisance, torch.Generator().manual_seed(0))
    assert xa.shape == (50, 3, 4, 4) and set(k.tolist()) == {0, 1}
    assert torch.equal(xa.mean((1, 2, 3)) > 0, k == 1) and torch.equal(xb.mean((1, 2, 3)) > 0, k == 1)
    assert not torch.equal(xa, xb)
    with pytest.raises(ValueError, match="examples"):
        sketch_pairs(examples[:1], 5, nuisance, torch.Generator())


def test_invariance_samples_vary_only_the_ignored_part():
    """z = (c, noise): a cINN of p(z | c) keeps z[0] ~ c for fixed c and varies z[1] (the invariance)."""
    torch.manual_seed(0)

    def batch(gen):
        c = torch.randn(128, 1, generator=gen)
        return torch.cat([c, torch.randn(128, 1, generator=gen)], 1), c

    cinn = Net2Net(2, 1, n_blocks=2, hidden=32, embed_dim=8, embed_hidden=32)
    cinn.fit(batch, 250, lr=3e-3)
    c = torch.tensor([[-1.0], [1.5]])
    s = sample_invariances(cinn.translate, c, 400)
    assert s.shape == (2, 400, 2)
    assert torch.allclose(s[:, :, 0].mean(1), c[:, 0], atol=0.25)
    assert (s[:, :, 0].std(1) < 0.35).all() and (s[:, :, 1].std(1) > 0.6).all()
    # one call on every row repeated n times, rows kept in order
    seen = []
    sample_invariances(lambda rep: seen.append(rep) or rep, c, 3)
    assert torch.equal(seen[0], torch.tensor([[-1.0]] * 3 + [[1.5]] * 3))
    with pytest.raises(ValueError, match="n must"):
        sample_invariances(cinn.translate, c, 0)
    with pytest.raises(TypeError, match="n must"):
        sample_invariances(cinn.translate, c, 2.0)
    with pytest.raises(ValueError, match="rep"):
        sample_invariances(cinn.translate, c[:, 0], 2)
