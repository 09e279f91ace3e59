"""``python -m jupiter_bus``: the ``jupiter-bus`` command."""

import sys

from .cli import main

sys.exit(main())
