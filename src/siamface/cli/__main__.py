"""``python -m siamface.cli``: the same as ``siamface`` and ``python -m siamface``."""

import sys

from . import main

sys.exit(main())
