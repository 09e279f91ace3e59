"""``python -m jupiter_bus.cli``: the ``jupiter-bus`` command."""

import sys

from . import main

sys.exit(main())
