"""The compiled scanner of lines in the plain shape (transforms/_plain.c)."""

from collections.abc import Sequence

TEXT_MAX: int
"""The most bytes a text may hold (2**31 - 1): views point into it with 32-bit offsets."""

Views = tuple[bytes | None, bytes]
"""Validity bits (None: no null) and Arrow string views into the texts."""
Strings = tuple[bytes | None, bytes, bytes | None]
"""Validity bits (None: no null), 64-bit offsets, bytes (None: a list's offsets only)."""

def scan(
    texts: Sequence[bytes],
) -> tuple[
    int, bytes, bytes, bytes, Views, Views, Views, Views, Views, Strings, Strings, Strings
]: ...
