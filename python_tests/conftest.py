"""Shared fixtures for the flowkern test suite (helpers live in helpers.py)."""

from __future__ import annotations

import os

import pytest
import torch

from .helpers import SCALES

# Keep CPU tests quick and repeatable on the 2-core CI machine.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(params=SCALES)
def scale(request):
    return request.param
