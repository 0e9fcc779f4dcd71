"""Counts and articles in messages: "1 update", "2 updates", "an unsigned tensor"."""

from __future__ import annotations


def plural(count: int, word: str, many: str | None = None) -> str:
    """`count word`, the word in the plural unless count is 1 (`many` for irregular plurals)."""
    return f"{count} {word if count == 1 else many or word + 's'}"


def article(phrase: str) -> str:
    """`a` or `an` before a phrase, by its first sound (enough for gdfit's own words and dtypes)."""
    word = phrase.lower()
    vowel = word[:1] in "aeiou" and not word.startswith(("uint", "uni", "use", "usu"))  # a uint32: "you-int"
    return f"{'an' if vowel else 'a'} {phrase}"
