"""``python -m dispatcher`` is the ``treadle`` command."""

from __future__ import annotations

import sys

from treadle.client import main

sys.exit(main())
