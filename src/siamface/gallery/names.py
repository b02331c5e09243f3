"""People's names: the one rule every way in applies (the CLI, the HTTP API, the stores, an import).

A name is at most `MAX_NAME_LENGTH` characters, normalised to Unicode NFKC (full-width ``Ａｌｉｃｅ`` is
``Alice``, a ligature ``ﬁ`` is ``fi``), and made of

- letters and combining marks of any script (Unicode categories L and M: ``Zoë``, ``李小龍``, ``Ngũgĩ``),
- numbers (category N),
- single ASCII spaces between words,
- the punctuation in `PUNCTUATION`: ``. , ' ’ - _ ( ) & @ +``,

and starts with a letter or a number. Anything else is refused with the reason: ``/`` and ``\\`` (a name
is also a URL path segment and a folder name), control characters, format characters such as the
right-to-left override U+202E or zero-width spaces, every default-ignorable code point (invisible: the
combining grapheme joiner U+034F, the Hangul fillers U+3164 and U+115F, variation selectors, U+200B,
U+2060, U+FEFF ...), other spaces, leading, trailing or doubled spaces, and names of punctuation only
(``..``). Refused too, because they make a name look like another one or like an answer:

- the words the answers use for a face (`RESERVED`: ``unknown``, ``ambiguous``, ``known``), in any case or
  look-alike spelling;
- a look-alike mix of scripts: a Latin name with a Cyrillic or Greek letter that looks like a Latin one
  (``Pаul`` with the Cyrillic а), and the other way round; a mix whose letters do not look alike stays
  valid (``Ωmega 7``);
- by the stores, a new name (or a rename) whose confusable `skeleton` is that of another person's name:
  ``Ian`` beside ``lan``, the Cyrillic ``Рое`` beside ``Poe``.

Every name accepted this way can be typed in a shell (``siamface people show 'Zoë O’Neil'``), used in a
URL path once percent-encoded (``/v1/people/Zo%C3%AB%20O%E2%80%99Neil``) and written as a folder name.
Names are unique ignoring case (see `siamface.gallery.store`), so ``A_b`` and ``a_b`` are one person.

Lookups (`lookup_form`) do not apply the rule: a person enrolled before it, under a name it now refuses,
can still be shown, renamed and removed by that name.
"""

from __future__ import annotations

import functools
import hashlib
import unicodedata
from importlib import resources

from ..errors import GalleryError

MAX_NAME_LENGTH = 200
#: The punctuation a name may hold, besides letters, marks, numbers and single spaces.
PUNCTUATION = frozenset(".,'\u2019-_()&@+")


#: The words the answers give for a face that is nobody's name (`siamface.decision` statuses).
RESERVED = frozenset({"unknown", "ambiguous", "known"})

#: Unicode's Default_Ignorable_Code_Point ranges (DerivedCoreProperties.txt, Unicode 15): invisible when shown.
_IGNORABLE = (
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160), (0x17B4, 0x17B5),
    (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F), (0x3164, 0x3164),
    (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF),
)  # fmt: skip

#: Letters of other scripts that look like a Latin letter (after UTS #39's confusables, the common ones), and
#: Latin look-alikes inside Latin; `skeleton` maps each to the Latin letter it looks like.
_LOOKALIKE = {
    **dict(zip("аеорсухіјѕһԁԛԝӏԍ", "aeopcyxijshdqwlg")),  # Cyrillic small
    **dict(zip("АВЕКМНОРСТХУІЈЅԚԜӀҮ", "ABEKMHOPCTXYIJSQWlY")),  # Cyrillic capital
    **dict(zip("αονρυικχγϲϳ", "aovpuikxycj")),  # Greek small
    **dict(zip("ΑΒΕΖΗΙΚΜΝΟΡΤΥΧ", "ABEZHIKMNOPTYX")),  # Greek capital
    **dict(zip("ıɑɡ", "iag")),  # Latin look-alikes of Latin letters
}
#: Within any script: shapes that read alike in common fonts (capital I and small l, 0 and O, 1 and l, rn and m).
_SAME_SHAPE = {"I": "l", "1": "l", "|": "l", "0": "O", "m": "rn"}


class InvalidNameError(GalleryError):
    """A name that the gallery refuses (see `check_name`)."""


def _refuse(name: str, why: str) -> InvalidNameError:
    return InvalidNameError(
        f"invalid name {name!r}: {why} (a name is letters, numbers, single spaces and "
        f". , ' ’ - _ ( ) & @ +, starting with a letter or a number)"
    )


def _ignorable(c: str) -> bool:
    code = ord(c)
    return any(lo <= code <= hi for lo, hi in _IGNORABLE)


def _script(c: str) -> str | None:
    """The script of a letter among those whose letters look alike (Latin, Greek, Cyrillic), else None."""
    name = unicodedata.name(c, "")
    for script in ("LATIN", "GREEK", "CYRILLIC"):
        if name.startswith(script):
            return script
    return None


@functools.cache
def _confusables() -> dict[str, str]:
    """Unicode's look-alike table (UTS #39 confusables.txt, its letters, marks and numbers: `confusables.tsv`,
    made by tools/build_confusables.py), read once, at the first name checked."""
    table = {}
    text = resources.files(__package__).joinpath("confusables.tsv").read_text(encoding="utf-8")
    for line in text.splitlines():
        if line and not line.startswith("#"):
            source, target = line.split("\t")
            table[chr(int(source, 16))] = "".join(chr(int(c, 16)) for c in target.split())
    return table


def _looks(text: str) -> str:
    table = _confusables()
    mapped = "".join(table.get(c, c) for c in (_LOOKALIKE.get(c, c) for c in text))
    return "".join(_SAME_SHAPE.get(c, c) for c in unicodedata.normalize("NFD", mapped))


def skeleton(name: str) -> str:
    """What `name` looks like: NFKC, each look-alike character as its prototype (Unicode's confusables, UTS #39:
    a Cyrillic or Greek letter as the Latin one, a small capital ``ꜱ`` as ``s``), alike shapes as one, case
    folded, marks kept. Two names with one skeleton are confusable (``Раul`` with a Cyrillic Р and ``Paul``;
    ``Ian`` and ``lan``; ``ꜱ3`` and ``s3``)."""
    text = _looks(unicodedata.normalize("NFD", unicodedata.normalize("NFKC", name)))
    return unicodedata.normalize("NFC", _looks(unicodedata.normalize("NFD", text.casefold())))


#: The version of `skeleton`'s steps: raise it when they change (the tables they use and Unicode's version are in
#: `skeleton_rule` by themselves).
SKELETON_STEPS = 1


@functools.cache
def skeleton_rule() -> str:
    """Which `skeleton` this is: `SKELETON_STEPS`, the Unicode version of this Python (its NFKC and case folding)
    and a digest of the look-alike tables. A gallery stores each person's skeleton, and the rule that made them:
    one written under another rule has them all computed again (`siamface.gallery.sqlbase`)."""
    digest = hashlib.sha256(resources.files(__package__).joinpath("confusables.tsv").read_bytes())
    digest.update(repr((sorted(_LOOKALIKE.items()), sorted(_SAME_SHAPE.items()))).encode())
    return f"{SKELETON_STEPS}/unicode-{unicodedata.unidata_version}/{digest.hexdigest()[:16]}"


def _mixed_lookalike(clean: str) -> str | None:
    """A letter of a minority script in `clean` that looks like a letter of its main script, or None."""
    scripts: dict[str, list[str]] = {}
    for c in unicodedata.normalize("NFD", clean):
        script = _script(c) if unicodedata.category(c)[0] == "L" else None
        if script is not None:
            scripts.setdefault(script, []).append(c)
    if len(scripts) < 2:
        return None
    main = max(scripts, key=lambda k: len(scripts[k]))
    looks = {skeleton(c) for c in scripts[main]} | (
        {skeleton(c) for c, _ in _LOOKALIKE.items() if _script(c) == main} if main != "LATIN" else set()
    )
    latin = {skeleton(c) for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"}
    for script, letters in scripts.items():
        if script == main:
            continue
        for c in letters:
            if skeleton(c) in (latin if main == "LATIN" else looks):
                return c
    return None


def check_name(name: str) -> str:
    """`name` in NFKC if it is a valid person's name (see the module), else `InvalidNameError` saying why."""
    if not isinstance(name, str):
        raise InvalidNameError(f"a person's name must be a string, not {type(name).__name__}")
    if not name or not name.strip():
        raise InvalidNameError("a person's name cannot be empty")
    clean = _check_characters(unicodedata.normalize("NFC", name))  # as typed: a no-break space is refused
    clean = _check_characters(unicodedata.normalize("NFKC", clean))  # then as stored
    if len(clean) > MAX_NAME_LENGTH:
        raise InvalidNameError(f"a person's name is limited to {MAX_NAME_LENGTH} characters, got {len(clean)}")
    if clean != clean.strip():
        raise _refuse(clean, "leading or trailing space")
    if "  " in clean:
        raise _refuse(clean, "two spaces in a row")
    if unicodedata.category(clean[0])[0] not in "LN":
        raise _refuse(clean, "it must start with a letter or a number")
    odd = _mixed_lookalike(clean)
    if odd is not None:
        raise _refuse(
            clean,
            f"a letter that looks like one of another script mixed in, U+{ord(odd):04X} {unicodedata.name(odd, '')}",
        )
    if skeleton(clean) in _RESERVED_SKELETONS:
        raise InvalidNameError(
            f"invalid name {clean!r}: {', '.join(sorted(RESERVED))} are what an answer says of a face, not names"
        )
    return clean


def _check_characters(text: str) -> str:
    """`text` unless it holds a character outside the name set (see the module): `InvalidNameError` then."""
    for c in text:
        category = unicodedata.category(c)
        if _ignorable(c):
            kind = "an invisible format character" if category == "Cf" else "an invisible character"
        elif c == " " or c in PUNCTUATION or category[0] in "LMN":
            continue
        elif category == "Cc":
            kind = "a control character"
        elif category == "Cf":
            kind = "an invisible format character"
        elif category[0] == "Z":
            kind = "a space other than the plain space"
        elif c in "/\\":
            kind = "a slash"
        else:
            kind = "a character outside the name set"
        raise _refuse(text, f"{kind}, U+{ord(c):04X} {unicodedata.name(c, '')}".rstrip())
    return text


_RESERVED_SKELETONS = frozenset(skeleton(word) for word in RESERVED)


def lookup_form(name: str) -> str:
    """The form a name is looked up by: NFC, surrounding spaces removed; no other rule (see the module)."""
    if not isinstance(name, str):
        return ""
    return unicodedata.normalize("NFC", name).strip()
