"""What lookups found, by digest: content never changes under a digest."""

from __future__ import annotations

from collections import OrderedDict

import attr
from twisted.logger import Logger

from ..events import ImageFacts

log = Logger()

CACHE_ENTRIES = 1024
# What the entries may hold in all, as :func:`cost` counts it.
CACHE_BYTES = 4 * 1024 * 1024
# What a Python object costs beyond its characters, near enough.
_OVERHEAD = 64


def cost(key: tuple[str, ...], facts: ImageFacts) -> int:
    """The bytes an entry holds, counted generously: every string's
    characters and an object's overhead for each."""
    strings = [*key, facts.digest, facts.media_type, *facts.platforms]
    strings += [text for pair in facts.labels.items() for text in pair]
    return 4 * _OVERHEAD + sum(len(text) + _OVERHEAD for text in strings)


@attr.s(auto_attribs=True)
class FactsCache:
    """Facts by (endpoint, repository, digest, credential), least recently used
    dropped first, bounded both in entries and in bytes (an entry's size
    is chosen by the registry: its labels and platforms)."""

    size: int = CACHE_ENTRIES
    max_bytes: int = CACHE_BYTES
    entries: OrderedDict[tuple[str, ...], tuple[ImageFacts, int]] = attr.ib(factory=OrderedDict)
    held: int = 0

    def get(self, key: tuple[str, ...]) -> ImageFacts | None:
        entry = self.entries.get(key)
        if entry is None:
            return None
        self.entries.move_to_end(key)
        return entry[0]

    def put(self, key: tuple[str, ...], facts: ImageFacts) -> None:
        size = cost(key, facts)
        if size > self.max_bytes:
            return
        old = self.entries.pop(key, None)
        if old is not None:
            self.held -= old[1]
        self.entries[key] = (facts, size)
        self.held += size
        while len(self.entries) > self.size or self.held > self.max_bytes:
            _, (_, dropped) = self.entries.popitem(last=False)
            self.held -= dropped
