"""``python -m xai_widgets`` runs the command line (see :mod:`xai_widgets.cli`)."""

import sys

from .cli import main

sys.exit(main())
