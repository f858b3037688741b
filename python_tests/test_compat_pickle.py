"""Whole-model torch.save / torch.load of the compat ActNorms (their init-flag load hook must pickle):
the loaded module keeps its init (no re-init on the next training call) and its outputs."""

from __future__ import annotations

import io

import pytest
import torch

import flowkern.compat.compvis as compvis
import flowkern.compat.nflows as nflows
import flowkern.compat.normflows as normflows


@pytest.mark.parametrize("make, call", [
    (lambda: compvis.ActNorm(4), lambda m, x: m(x[:, :, None, None])[0].flatten(1)),
    (lambda: nflows.ActNorm(4), lambda m, x: m(x)[0]),
    (lambda: normflows.ActNorm((4,)), lambda m, x: m(x)[0]),
], ids=["compvis", "nflows", "normflows"])
def test_whole_module_pickles_and_keeps_its_init(make, call):
    torch.manual_seed(0)
    m = make().train()
    call(m, torch.randn(64, 4) * 3 + 2)  # data-dependent init
    buf = io.BytesIO()
    torch.save(m, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False).train()
    x = torch.randn(16, 4) - 5  # would re-initialise to zero mean if the init were lost
    torch.testing.assert_close(call(loaded, x), call(m, x), rtol=0, atol=0)


def test_the_former_image_module_names_resolve_to_the_peer_packages():
    """Pickles and imports made when the image models lived in ``flowkern.compat.image`` still
    resolve: each old name is the class of its peer's package (the path new pickles record)."""
    import pickle

    import flowkern.compat.freia as freia
    import flowkern.compat.image as image

    for old, new in ((image.GlowBlock, normflows.GlowBlock), (image.MultiscaleFlow, normflows.MultiscaleFlow),
                     (image.MultiscaleCompositeTransform, nflows.MultiscaleCompositeTransform),
                     (image.GraphINN, freia.GraphINN), (image.Split, freia.Split)):
        assert old is new and new.__module__ in ("flowkern.compat.normflows", "flowkern.compat.nflows",
                                                 "flowkern.compat.freia")
    old_pickle = pickle.dumps(normflows.Squeeze(), protocol=0).replace(b"flowkern.compat.normflows", b"flowkern.compat.image")
    assert type(pickle.loads(old_pickle)) is normflows.Squeeze
    with pytest.raises(AttributeError, match="has no attribute 'Nothing'"):
        image.Nothing
