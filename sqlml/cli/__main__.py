"""``python -m sqlml.cli``: the ``sqlml`` command."""

import sys

from sqlml.cli import main

sys.exit(main())
