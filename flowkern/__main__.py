"""``python -m flowkern ...``: the ``flowkern`` command line (:mod:`flowkern.cli`)."""

import sys

from .cli import main

sys.exit(main())
