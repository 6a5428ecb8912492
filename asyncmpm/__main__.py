"""``python -m asyncmpm``."""

import sys

from asyncmpm.cli import main

sys.exit(main())
