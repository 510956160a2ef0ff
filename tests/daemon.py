"""The real gateway process, for the integration tier: see :mod:`devtools.gateway`."""

from devtools.gateway import ROOT, TWISTD, Answer, Daemon, free_port, start

__all__ = ["ROOT", "TWISTD", "Answer", "Daemon", "free_port", "start"]
