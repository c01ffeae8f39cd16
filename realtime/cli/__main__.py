"""`python -m realtime.cli ...` runs the `mega-rt` command line."""

import sys

from realtime.cli import main

sys.exit(main())
