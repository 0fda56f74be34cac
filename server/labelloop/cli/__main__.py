"""``python -m labelloop.cli``: the ``labelloop`` command."""

import sys

from labelloop.cli import main

sys.exit(main())
