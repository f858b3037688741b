"""Save / load of flows: resuming gives exactly the next step of an uninterrupted run
(Flow with ActNorm + Adam), ActNorm never re-initialises after a load, and loading
mismatched shapes fails with a message naming the parameter."""

from __future__ import annotations

import io

import pytest
import torch

nn = pytest.importorskip("flowkern.nn")


def _data(step: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(100 + step)
    return torch.randn(64, 6, generator=g) * torch.tensor([1.0, 3.0, 0.5, 2.0, 1.0, 4.0]) + 1.5


def _make(cond: bool = False):
    torch.manual_seed(0)
    flow = nn.build_flow(6, 2, 32, cond_channels=3 if cond else 0)
    return flow, torch.optim.Adam(flow.parameters(), lr=1e-3)


def _cond(step: int) -> torch.Tensor:
    return torch.randn(64, 3, generator=torch.Generator().manual_seed(200 + step))


def _step(flow, opt, step: int, cond: bool) -> float:
    opt.zero_grad()
    loss = flow.nll_loss(_data(step), _cond(step)) if cond else flow.nll_loss(_data(step))
    loss.backward()
    opt.step()
    return loss.item()


def _save(flow, opt) -> bytes:
    buf = io.BytesIO()
    torch.save({"model": flow.state_dict(), "opt": opt.state_dict()}, buf)
    return buf.getvalue()


@pytest.mark.parametrize("cond", [False, True])
def test_resume_equals_never_stopping(cond):
    flow, opt = _make(cond)
    for step in range(4):
        _step(flow, opt, step, cond)
    blob = _save(flow, opt)
    uninterrupted = [_step(flow, opt, step, cond) for step in (4, 5)]

    flow2, opt2 = _make(cond)
    torch.manual_seed(1234)  # a different init must be fully overwritten by the load
    state = torch.load(io.BytesIO(blob), weights_only=True)
    flow2.load_state_dict(state["model"])
    opt2.load_state_dict(state["opt"])
    resumed = [_step(flow2, opt2, step, cond) for step in (4, 5)]
    assert resumed == uninterrupted, f"resumed losses {resumed} != uninterrupted {uninterrupted}"
    for (name, p), q in zip(flow.named_parameters(), flow2.parameters()):
        assert torch.equal(p, q), f"parameter {name} diverged after resuming"


def test_actnorm_does_not_reinitialise_after_load():
    flow, opt = _make()
    _step(flow, opt, 0, False)
    with torch.no_grad():  # move ActNorm away from its data init, as training would
        for mod in flow.modules():
            if isinstance(mod, nn.ActNorm):
                for p in mod.parameters():
                    p.add_(0.25)
    flow2, _ = _make()
    flow2.load_state_dict(flow.state_dict())
    before = {k: v.clone() for k, v in flow2.state_dict().items()}
    flow2.train()
    flow2(_data(7) * 10 - 3)  # very different data: an init would change loc/scale
    for k, v in flow2.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed by a forward after load (re-initialised?)"


def test_fresh_actnorm_initialises_once():
    act = nn.ActNorm(6)
    act.train()
    y, _ = act(_data(0))
    torch.testing.assert_close(y.mean(0), torch.zeros(6), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(0), torch.ones(6), atol=1e-4, rtol=0)
    state = {k: v.clone() for k, v in act.state_dict().items()}
    act(_data(1) * 3)
    for k, v in act.state_dict().items():
        assert torch.equal(v, state[k]), f"ActNorm {k} re-initialised on its second forward"


def test_loading_wrong_shapes_names_the_parameter():
    flow = nn.build_flow(6, 2, 32)
    other = nn.build_flow(8, 2, 32)
    with pytest.raises(RuntimeError, match=r"size mismatch for \S+"):
        flow.load_state_dict(other.state_dict())
    with pytest.raises(RuntimeError, match=r"Missing key|Unexpected key"):
        flow.load_state_dict(nn.build_flow(6, 3, 32).state_dict())
