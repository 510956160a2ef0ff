"""What lookups found, by digest: content never changes under a digest."""

from __future__ import annotations

from collections import OrderedDict

import attr
from twisted.logger import Logger

from ..events import ImageFacts

log = Logger()

CACHE_ENTRIES = 1024


@attr.s(auto_attribs=True)
class FactsCache:
    """Facts by (endpoint, repository, digest, credential), least recently used
    dropped first."""

    size: int = CACHE_ENTRIES
    entries: OrderedDict[tuple[str, ...], ImageFacts] = attr.ib(factory=OrderedDict)

    def get(self, key: tuple[str, ...]) -> ImageFacts | None:
        facts = self.entries.get(key)
        if facts is not None:
            self.entries.move_to_end(key)
        return facts

    def put(self, key: tuple[str, ...], facts: ImageFacts) -> None:
        self.entries[key] = facts
        self.entries.move_to_end(key)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)
