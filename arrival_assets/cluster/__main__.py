"""`python -m arrival_assets.cluster worker|cluster up|down|instance` (what the local cluster's workers run)."""

import sys

from .commands import main

sys.exit(main())
