"""``python -m drake`` is the ``drake`` command."""

import sys

from drake.cli import main

sys.exit(main())
