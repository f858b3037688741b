"""Puts ``examples/interpretation`` on ``sys.path`` for the tests of the interpretation example.

The example is a folder of modules beside its script ``run.py`` (not part of the ``flowkern``
package); the script imports them by name (``colorful_digits``, ``experts``, ``stages`` ...) with its
own folder on ``sys.path``, and a test imports them the same way after importing this module.
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["EXAMPLE_DIR", "RUN_SCRIPT"]

EXAMPLE_DIR = Path(__file__).resolve().parents[1] / "examples" / "interpretation"
RUN_SCRIPT = EXAMPLE_DIR / "run.py"

if str(EXAMPLE_DIR) not in sys.path:
    sys.path.insert(0, str(EXAMPLE_DIR))
