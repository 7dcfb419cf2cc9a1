"""``python -m ingestor``."""

import sys

from ingestor.cli.main import main

sys.exit(main())
