"""Experts whose representations the flows interpret and translate: an image autoencoder, a digit
classifier (the "black box") and a MiniLM sentence encoder (optional extra ``flowkern[text]``)."""

from .autoencoder import ConvAutoencoder, train_autoencoder
from .classifier import DigitClassifier, train_classifier
from .text import TEST_TEMPLATES, TEXT_EXTRA, TRAIN_TEMPLATES, TextExpert, caption, text_available

__all__ = ["ConvAutoencoder", "train_autoencoder", "DigitClassifier", "train_classifier", "TextExpert",
           "caption", "text_available", "TEXT_EXTRA", "TRAIN_TEMPLATES", "TEST_TEMPLATES"]
