"""Development tools: what the tests, ``make run`` and the bench share.

Nothing here is installed with the gateway (``setup.py`` lists only
``brigade_crgw``); the tests and scripts import it from the working tree
through ``PYTHONPATH`` (pytest: ``pythonpath = .`` in pytest.ini).

- :mod:`devtools.plane`: the local Kubernetes control plane, ``Plane``;
- :mod:`devtools.gateway`: the real ``twistd -n brigade-crgw`` process;
- :mod:`devtools.projects`: project Secrets as ``brig project create`` writes them.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
