"""``python -m devtools.plane up|down|status|env|build`` (scripts/control-plane)."""

import sys

from .cli import main

sys.exit(main(sys.argv))
