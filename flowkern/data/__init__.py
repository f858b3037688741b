"""Offline datasets with known factors of variation."""

from .colorful_digits import (COLOUR_NAMES, COLOURS, DIGIT_WORDS, FACTORS, N_WRITER_BLOCKS, ColorfulDigits,
                              NuisanceParams, load_gray_digits, random_deform, random_nuisance, render, writer_split)

__all__ = ["COLOUR_NAMES", "COLOURS", "DIGIT_WORDS", "FACTORS", "N_WRITER_BLOCKS", "ColorfulDigits",
           "NuisanceParams", "load_gray_digits", "random_deform", "random_nuisance", "render", "writer_split"]
