"""`python -m agent` runs the waypost command line (same as the `waypost` console script)."""

import sys

from agent.cli import main

sys.exit(main())
