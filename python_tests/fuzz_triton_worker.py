"""Fuzz the Triton backend on CPU tensors: ``python -m python_tests.fuzz_triton_worker [pytest args]``.

Sets ``TRITON_INTERPRET=1`` before anything imports triton, then runs the
properties of ``test_fuzz.py`` (those matching ``FLOWKERN_FUZZ_SELECT``, a pytest ``-k``
expression) with ``FLOWKERN_FUZZ_BACKENDS=triton``, all in this one process (triton's
import and kernel set-up are paid once). Example counts as in
:func:`fuzz_strategies.example_count`. Prints ``SKIP: <reason>`` and exits 0 when the
Triton backend cannot run here.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "1"
os.environ["FLOWKERN_FUZZ_BACKENDS"] = "triton"


def main(argv: list[str]) -> int:
    import pytest

    from python_tests.fuzz_strategies import probe_backend

    reason = probe_backend("triton")
    if reason is not None:
        print(f"SKIP: triton backend unavailable under TRITON_INTERPRET=1: {reason}", flush=True)
        return 0
    test_file = Path(__file__).with_name("test_fuzz.py")
    return int(pytest.main([str(test_file), "-q", "-p", "no:cacheprovider", "-m", "not slow",
                            "-k", f"not subprocess and ({os.environ.get('FLOWKERN_FUZZ_SELECT') or 'test'})",
                            "-W", "ignore::pytest.PytestAssertRewriteWarning", *argv]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
