"""Sphinx configuration for brigade-crgw's documentation (``make docs``).

The pages are reStructuredText, but for ``benchmark.md``, which ``make
bench`` writes in Markdown; myst-parser reads that one.  ``_ext/crgw_docs.py`` takes
facts from the code and the payload catalogue rather than repeating them.
"""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path[:0] = [str(DOCS / "_ext"), str(DOCS.parent)]

project = "brigade-crgw"
author = "the brigade-crgw authors"
copyright = "the brigade-crgw authors, Apache-2.0"
release = version = "0.1.0"

extensions = ["myst_parser", "crgw_docs"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_ext"]
myst_heading_anchors = 3

# Every reference must resolve (``sphinx-build -n``), and nothing is
# highlighted that is not what its block says it is.
nitpicky = True
highlight_language = "none"

html_theme = "alabaster"
html_title = "brigade-crgw"
html_theme_options = {
    "description": "Container-registry webhooks become Brigade v1 builds",
    "fixed_sidebar": True,
    "show_relbars": True,
}
html_sidebars = {"**": ["about.html", "navigation.html", "relations.html", "searchbox.html"]}
html_static_path: list[str] = []
