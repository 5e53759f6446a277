"""``python -m dispatcher`` is the ``treadle`` command."""

from __future__ import annotations

import sys

from dispatcher import main

sys.exit(main())
