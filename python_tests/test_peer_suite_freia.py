"""FrEIA's container behaviour with flowkern's adapters: the equivalent of FrEIA's own suite for
``SequenceINN`` and ``GraphINN`` (FrEIA 0.2's source distribution ships no tests).

Against FrEIA 0.2 itself: a model built with flowkern's adapters (as classes, as instances, or
mixed with FrEIA's own modules) gives the numbers of the same model built from FrEIA's modules
(same seeds, same weights) — forward, inverse, log-det, conditions selected by index, log-prob
and sampling of the pushed-forward standard normal (FrEIA's ``PushedDistribution`` idea, written
here as two functions), gradients, ``state_dict`` keys, pickling. FrEIA 0.2's containers call the
"class" they are given with the input dims; an adapter instance answers that call with itself,
which FrEIA's development version does through ``isinstance(module, InvertibleModule)``.
"""

from __future__ import annotations

import io
import math

import FrEIA.framework as Ff
import FrEIA.modules as Fm
import numpy as np
import pytest
import torch

import flowkern.compat.freia as Km

from .compat_support import assert_same, assert_same_grads, mlp, nd_net

DIM, COND = 7, (3, 2)  # odd feature count, two conditions of different sizes


def _log_prob(inn, x, c):
    """log p(x) of the standard normal pushed through the inverse of ``inn`` (x -> z)."""
    z, log_jac = inn(x, c=c)
    return -0.5 * (z**2).sum(1) - 0.5 * z.shape[1] * math.log(2 * math.pi) + log_jac


def _sample(inn, n, c, generator):
    """x = inn^-1(z), z ~ N(0, I): FrEIA's sampling of a pushed distribution."""
    z = torch.randn(n, DIM, generator=generator)
    x, _ = inn(z, c=c, rev=True)
    return z, x


def soft_clamp(u):
    """A custom FrEIA clamp activation (module-level, so models using it pickle)."""
    return 0.9 * torch.tanh(u)


# block recipes: (module name, condition index or None, kwargs)
RECIPE = [
    ("ActNorm", None, {}),
    ("GLOWCouplingBlock", 0, dict(clamp_activation="TANH")),
    ("PermuteRandom", None, dict(seed=3)),
    ("AllInOneBlock", 1, dict(permute_soft=True)),
    ("RNVPCouplingBlock", 1, dict(split_len=2)),
    ("AffineCouplingOneSided", 0, dict(clamp_activation=soft_clamp)),
    ("AllInOneBlock", None, dict(global_affine_type="EXP", learned_householder_permutation=2)),
]


def _kwargs(name, cond, kw):
    kw = dict(kw)
    if name not in ("ActNorm", "PermuteRandom"):
        kw["subnet_constructor"] = mlp
    return kw


def _build(lib, how: str):
    """FrEIA 0.2's SequenceINN with the recipe's modules from ``lib``: appended as classes,
    as instances, or alternately."""
    np.random.seed(0)
    torch.manual_seed(0)
    inn = Ff.SequenceINN(DIM)
    for i, (name, cond, kw) in enumerate(RECIPE):
        cls = getattr(lib, name)
        kw = _kwargs(name, cond, kw)
        as_instance = how == "instances" or (how == "mixed" and i % 2)
        if cond is None:
            inn.append(cls([(DIM,)], **kw) if as_instance else cls, **({} if as_instance else kw))
        elif as_instance:
            inn.append(cls([(DIM,)], [(COND[cond],)], **kw), cond=cond, cond_shape=(COND[cond],))
        else:
            inn.append(cls, cond=cond, cond_shape=(COND[cond],), **kw)
    return inn


def _data(n=9, seed=1):
    g = torch.Generator().manual_seed(seed)
    return 1 + 2 * torch.randn(n, DIM, generator=g), [torch.randn(n, k, generator=g) for k in COND]


@pytest.mark.parametrize("how", ["classes", "instances", "mixed"])
def test_sequence_inn_with_adapters_gives_freias_numbers(how):
    peer, ours = _build(Fm, "classes"), _build(Km, how)
    assert all(isinstance(m, Km._Adapter) for m in ours.module_list)
    assert list(peer.state_dict()) == list(ours.state_dict())
    x, c = _data()
    assert_same(peer(x, c=c), ours(x, c=c))  # initialises both ActNorms on the same batch
    z, jac = ours(x, c=c)
    assert_same(peer(z, c=c, rev=True), ours(z, c=c, rev=True))
    x_back, jac_rev = ours(z, c=c, rev=True)
    torch.testing.assert_close(x_back, x, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(jac_rev, -jac, atol=1e-4, rtol=1e-4)
    # (z, log-det) projected on random directions: the log-prob alone is blind to the last
    # block's orthogonal permutation, so its gradients there would be rounding noise
    assert_same_grads(peer, ours, lambda x, *c: peer(x, c=list(c)), lambda x, *c: ours(x, c=list(c)),
                      [x, *c], atol=2e-4, rtol=2e-4)


def test_pushed_distribution_log_prob_and_sampling():
    peer, ours = _build(Fm, "classes"), _build(Km, "mixed")
    x, c = _data()
    peer(x, c=c), ours(x, c=c)  # ActNorm init
    assert_same(_log_prob(peer, x, c), _log_prob(ours, x, c), atol=1e-4, rtol=1e-4)
    zp, xp = _sample(peer, 9, c, torch.Generator().manual_seed(5))
    zo, xo = _sample(ours, 9, c, torch.Generator().manual_seed(5))
    torch.testing.assert_close(xo, xp, atol=1e-4, rtol=1e-4)
    # a sample's log-prob is the base log-prob of its z minus the log-det of x -> z ... consistent:
    z_back, _ = ours(xo, c=c)
    torch.testing.assert_close(z_back, zo, atol=1e-4, rtol=1e-4)
    log_q = -0.5 * (zo**2).sum(1) - 0.5 * DIM * math.log(2 * math.pi) + ours(xo, c=c)[1]
    torch.testing.assert_close(_log_prob(ours, xo, c), log_q)


def test_flowkern_sequence_inn_takes_classes_instances_and_freias_own_modules():
    np.random.seed(0)
    torch.manual_seed(0)
    inn = Km.SequenceINN(DIM)
    inn.append(Km.ActNorm)
    inn.append(Km.AllInOneBlock([(DIM,)], [(3,)], subnet_constructor=mlp), cond=0, cond_shape=(3,))
    inn.append(Fm.PermuteRandom([(DIM,)], seed=1))  # FrEIA's own instance
    inn.append(Fm.GLOWCouplingBlock, cond=1, cond_shape=(2,), subnet_constructor=mlp)
    x, c = _data()
    z, jac = inn(x, c=c)
    x_back, jac_rev = inn(z, c=c, rev=True)
    torch.testing.assert_close(x_back, x, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(jac_rev, -jac, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="expects"):
        inn.append(Km.ActNorm([(DIM + 1,)]))
    with pytest.raises(ValueError, match="constructor arguments"):
        inn.append(Km.PermuteRandom([(DIM,)]), seed=3)
    with pytest.raises(ValueError, match="dims_c"):
        inn.append(Km.AllInOneBlock([(DIM,)], [(3,)], subnet_constructor=mlp), cond=1, cond_shape=(2,))
    assert len(inn) == 4 and inn.shapes == [(DIM,)] * 5  # failed appends leave the chain as it was


def test_freia_sequence_inn_rejects_a_mismatched_instance():
    inn = Ff.SequenceINN(DIM)
    with pytest.raises(ValueError, match="expects"):
        inn.append(Km.GLOWCouplingBlock([(DIM + 2,)], subnet_constructor=mlp))
    with pytest.raises(ValueError, match="constructor arguments"):
        inn.append(Km.GLOWCouplingBlock([(DIM,)], subnet_constructor=mlp), clamp=3.0)


def _graph(lib, instances: bool):
    """Input -> ActNorm -> split 3|4 -> coupling on the first part (condition a) -> concat ->
    AllInOne (condition b) -> AllInOne (both conditions). One branch carries a module, so the
    topological order (and so the state-dict order) does not depend on FrEIA's set iteration."""
    np.random.seed(0)
    torch.manual_seed(0)
    inp = Ff.InputNode(DIM, name="in")
    cond_a, cond_b = Ff.ConditionNode(COND[0], name="ca"), Ff.ConditionNode(COND[1], name="cb")

    def node(inputs, name, dims, conds, **kw):
        cls = getattr(lib, name)
        if instances:
            dims_c = [(cnd.dims[0],) for cnd in conds]
            return Ff.Node(inputs, cls(dims, dims_c, **kw) if conds else cls(dims, **kw), {}, conditions=conds)
        return Ff.Node(inputs, cls, kw, conditions=conds)

    n0 = node(inp, "ActNorm", [(DIM,)], [])
    split = Ff.Node(n0, Fm.Split, {"section_sizes": [3, 4], "dim": 0})
    a = node(split.out0, "GLOWCouplingBlock", [(3,)], [cond_a], subnet_constructor=nd_net(0))
    cat = Ff.Node([a.out0, split.out1], Fm.Concat, {"dim": 0})
    b = node(cat, "AllInOneBlock", [(DIM,)], [cond_b], subnet_constructor=mlp)
    last = node(b, "AllInOneBlock", [(DIM,)], [cond_a, cond_b], subnet_constructor=mlp, permute_soft=True)
    out = Ff.OutputNode(last, name="out")
    return Ff.GraphINN([inp, cond_a, cond_b, n0, split, a, cat, b, last, out])


@pytest.mark.parametrize("instances", [False, True], ids=["classes", "instance-nodes"])
def test_graph_inn_with_adapter_nodes_gives_freias_numbers(instances):
    peer, ours = _graph(Fm, False), _graph(Km, instances)
    modules = [n.module for n in ours.node_list if isinstance(n.module, Km._Adapter)]
    assert len(modules) == 4 and all(m in list(ours.module_list) for m in modules)
    assert "GLOWCouplingBlock" in str(next(n for n in ours.node_list if isinstance(n.module, Km.GLOWCouplingBlock)))
    assert list(peer.state_dict()) == list(ours.state_dict())
    x, c = _data()
    assert_same(peer(x, c=c), ours(x, c=c))
    z, jac = ours(x, c=c)
    assert_same(peer(z, c=c, rev=True), ours(z, c=c, rev=True))
    torch.testing.assert_close(ours(z, c=c, rev=True)[0], x, atol=1e-4, rtol=1e-4)
    # (z, log-det) projected on random directions: the log-prob alone is blind to the last
    # block's orthogonal permutation, so its gradients there would be rounding noise
    assert_same_grads(peer, ours, lambda x, *c: peer(x, c=list(c)), lambda x, *c: ours(x, c=list(c)),
                      [x, *c], atol=2e-4, rtol=2e-4)


def test_graph_inn_rejects_an_instance_built_for_other_dims():
    inp = Ff.InputNode(DIM)
    with pytest.raises(ValueError, match="expects"):
        Ff.Node(inp, Km.AllInOneBlock([(DIM - 1,)], subnet_constructor=mlp), {})
    with pytest.raises(ValueError, match="dims_c"):
        Ff.Node(inp, Km.AllInOneBlock([(DIM,)], subnet_constructor=mlp), {},
                conditions=[Ff.ConditionNode(3)])


def test_models_with_adapters_pickle_and_load_state_across_libraries():
    peer, ours = _build(Fm, "classes"), _build(Km, "instances")
    x, c = _data()
    peer(x, c=c)
    ours.load_state_dict(peer.state_dict())  # FrEIA's weights into the adapters (ActNorm: no re-init)
    assert_same(peer(x, c=c), ours(x, c=c))
    buf = io.BytesIO()
    torch.save(ours, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    assert type(loaded) is Ff.SequenceINN and all(type(a) is type(b) for a, b in zip(loaded, ours))
    assert_same(ours(x, c=c), loaded(x, c=c))
    back = _build(Fm, "classes")
    back.load_state_dict(loaded.state_dict())  # and back into FrEIA's own modules
    assert_same(back(x, c=c), ours(x, c=c))
