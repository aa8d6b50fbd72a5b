"""``python -m rtseg_compiler.cli ARGS``: the same as the ``rtsegc`` console script."""

import sys

from . import main

sys.exit(main())
