"""People's names: the one rule every way in applies (the CLI, the HTTP API, the stores, an import).

A name is at most `MAX_NAME_LENGTH` characters, normalised to Unicode NFC, and made of

- letters and combining marks of any script (Unicode categories L and M: ``Zoë``, ``李小龍``, ``Ngũgĩ``),
- numbers (category N),
- single ASCII spaces between words,
- the punctuation in `PUNCTUATION`: ``. , ' ’ - _ ( ) & @ +``,

and starts with a letter or a number. Anything else is refused with the reason: ``/`` and ``\\`` (a name
is also a URL path segment and a folder name), control characters, format characters such as the
right-to-left override U+202E or zero-width spaces (they make a name look like another one), other
spaces, leading, trailing or doubled spaces, and names of punctuation only (``..``).

Every name accepted this way can be typed in a shell (``siamface people show 'Zoë O’Neil'``), used in a
URL path once percent-encoded (``/v1/people/Zo%C3%AB%20O%E2%80%99Neil``) and written as a folder name.
Names are unique ignoring case (see `siamface.gallery.store`), so ``A_b`` and ``a_b`` are one person.

Lookups (`lookup_form`) do not apply the rule: a person enrolled before it, under a name it now refuses,
can still be shown, renamed and removed by that name.
"""

from __future__ import annotations

import unicodedata

from ..errors import GalleryError

MAX_NAME_LENGTH = 200
#: The punctuation a name may hold, besides letters, marks, numbers and single spaces.
PUNCTUATION = frozenset(".,'\u2019-_()&@+")


class InvalidNameError(GalleryError):
    """A name that the gallery refuses (see `check_name`)."""


def _refuse(name: str, why: str) -> InvalidNameError:
    return InvalidNameError(
        f"invalid name {name!r}: {why} (a name is letters, numbers, single spaces and "
        f". , ' ’ - _ ( ) & @ +, starting with a letter or a number)"
    )


def check_name(name: str) -> str:
    """`name` in NFC if it is a valid person's name (see the module), else `InvalidNameError` saying why."""
    if not isinstance(name, str):
        raise InvalidNameError(f"a person's name must be a string, not {type(name).__name__}")
    if not name or not name.strip():
        raise InvalidNameError("a person's name cannot be empty")
    clean = unicodedata.normalize("NFC", name)
    if len(clean) > MAX_NAME_LENGTH:
        raise InvalidNameError(f"a person's name is limited to {MAX_NAME_LENGTH} characters, got {len(clean)}")
    if clean != clean.strip():
        raise _refuse(clean, "leading or trailing space")
    if "  " in clean:
        raise _refuse(clean, "two spaces in a row")
    for c in clean:
        category = unicodedata.category(c)
        if c == " " or c in PUNCTUATION or category[0] in "LMN":
            continue
        if category == "Cc":
            kind = "a control character"
        elif category == "Cf":
            kind = "an invisible format character"
        elif category[0] == "Z":
            kind = "a space other than the plain space"
        elif c in "/\\":
            kind = "a slash"
        else:
            kind = "a character outside the name set"
        raise _refuse(clean, f"{kind}, U+{ord(c):04X} {unicodedata.name(c, '')}".rstrip())
    if unicodedata.category(clean[0])[0] not in "LN":
        raise _refuse(clean, "it must start with a letter or a number")
    return clean


def lookup_form(name: str) -> str:
    """The form a name is looked up by: NFC, surrounding spaces removed; no other rule (see the module)."""
    if not isinstance(name, str):
        return ""
    return unicodedata.normalize("NFC", name).strip()
