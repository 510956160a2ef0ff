"""Reading a CEL expression's text: which names it uses, which
comprehensions it calls and how deep they nest, and whether it may read
what only a registry lookup tells.  Not a parser (the CEL library is that):
enough of a tokenizer to see names and parentheses, for
:mod:`~brigade_crgw.delivery.filters` to refuse the costly shapes and to
judge a filter before lookups when it can.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

# The fields of ``image`` that are known before any lookup; a filter that
# reads no other (and does not use ``image`` whole) is judged before lookups.
KNOWN_WITHOUT_LOOKUP = frozenset({"registry", "action", "host", "repository", "tag", "pusher"})
COMPREHENSIONS = frozenset({"all", "exists", "exists_one", "map", "filter"})


def _tokens(text: str) -> Iterator[str]:
    """The expression's tokens, string and bytes literals as ``"`` and
    comments left out: enough to see which names it uses and how its
    parentheses nest, not a parser (the library is that)."""
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
        elif c in "\"'" or (c in "rRbB" and _quote_at(text, i)):
            i = _after_string(text, i)
            yield '"'
        elif c == "_" or c.isalpha():
            start = i
            while i < n and (text[i] == "_" or text[i].isalnum()):
                i += 1
            yield text[start:i]
        else:
            i += 1
            yield c


def _quote_at(text: str, i: int) -> bool:
    """Whether a string literal with prefixes (``r``, ``b``, ``rb``...) starts at ``i``."""
    j = i
    while j < len(text) and j - i < 2 and text[j] in "rRbB":
        j += 1
    return j < len(text) and text[j] in "\"'"


def _after_string(text: str, i: int) -> int:
    """The index just past the string literal starting at ``i`` (or the end)."""
    raw = False
    while text[i] in "rRbB":
        raw = raw or text[i] in "rR"
        i += 1
    quote = text[i] * 3 if text.startswith(text[i] * 3, i) else text[i]
    i += len(quote)
    while i < len(text):
        if not raw and text[i] == "\\":
            i += 2
        elif text.startswith(quote, i):
            return i + len(quote)
        else:
            i += 1
    return len(text)


def needs_lookup(text: str) -> bool:
    """Whether the expression may read what only a lookup tells.

    It does unless every use of the name ``image`` is followed by ``.`` and
    one of :data:`KNOWN_WITHOUT_LOOKUP` (``image.tag``, ``has(image.host)``).
    ``image.platforms``, ``image.labels``, ``image.digest``,
    ``image.lookup``, ``image['tag']`` or ``image`` alone need the lookup.
    A name ``image`` anywhere else (a field of ``request``, a comprehension
    variable) is taken as a use too: that errs towards waiting.
    """
    tokens = list(_tokens(text))
    for i, word in enumerate(tokens):
        if word != "image":
            continue
        follows = tokens[i + 1 : i + 3]
        if len(follows) < 2 or follows[0] != "." or follows[1] not in KNOWN_WITHOUT_LOOKUP:
            return True
    return False


def _macro_at(tokens: Sequence[str], i: int) -> str:
    """The comprehension whose ``(`` is ``tokens[i]``, or ""."""
    if tokens[i] == "(" and i >= 2 and tokens[i - 2] == "." and tokens[i - 1] in COMPREHENSIONS:
        return tokens[i - 1]
    return ""


def nesting(text: str) -> int:
    """How deep the expression's comprehensions nest (0: it has none)."""
    stack: list[bool] = []
    deepest = 0
    tokens = list(_tokens(text))
    for i, word in enumerate(tokens):
        if word == "(":
            stack.append(bool(_macro_at(tokens, i)))
            deepest = max(deepest, sum(stack))
        elif word == ")" and stack:
            stack.pop()
    return deepest


def macros(text: str) -> set[str]:
    """The comprehensions the expression calls."""
    tokens = list(_tokens(text))
    return {_macro_at(tokens, i) for i in range(len(tokens))} - {""}


def additions(text: str) -> int:
    """How many ``+`` the expression has (outside its string literals)."""
    return sum(1 for word in _tokens(text) if word == "+")


def bound_names(text: str) -> set[str]:
    """The names the expression's comprehensions bind (``p`` in
    ``image.platforms.exists(p, ...)``)."""
    tokens = list(_tokens(text))
    return {tokens[i + 1] for i in range(len(tokens) - 1) if _macro_at(tokens, i)}
