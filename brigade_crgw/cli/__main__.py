"""``python -m brigade_crgw.cli``: the ``brigade-crgw`` command."""

import sys

from . import main

sys.exit(main())
