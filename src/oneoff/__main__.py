"""`python -m oneoff` runs the CLI."""

import sys

from oneoff.cli import main

sys.exit(main())
