"""``python -m online_dt`` runs the CLI."""

import sys

from online_dt.cli import main

sys.exit(main())
