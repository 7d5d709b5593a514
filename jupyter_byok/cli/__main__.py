"""``python -m jupyter_byok.cli``: the same command as ``jupyter byok``."""

import sys

from . import main

sys.exit(main())
