"""``python -m exporter``: the same as the ``accounting-sync-exporter`` script."""

import sys

from exporter.cli import main

sys.exit(main())
