"""People's names: one documented set, enforced by every way in (the stores' add, import and rename, the
gallery's enroll, the CLI), NFC-normalised, looked up ignoring case; a name enrolled before the rule can still
be shown and removed. Store-level tests run on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import unicodedata

import pytest
from conftest import att
from gallery_support import (  # noqa: F401
    backend,
    base_gallery,
    check_consistent,
    cli,
    gallery_file,
    new_gallery,
    raw_rename,
    rows,
    unit_vectors,
)

from siamface.gallery import Gallery, ModelBinding, NewTemplate, open_store
from siamface.gallery.names import MAX_NAME_LENGTH, InvalidNameError, check_name

MODEL = ModelBinding("test-model", "1", 128)
GOOD = [
    "Alice",
    "Zoë O’Neil",
    "李小龍",
    "Ngũgĩ wa Thiong'o",
    "Jean-Luc Picard",
    "O.J. (Jr.) & co + 2",
    "a_b",
    "user@example.org",
    "x" * MAX_NAME_LENGTH,
    "Ωmega 7",
]
BAD = {
    "a/b": "slash",
    "a\\b": "slash",
    "evil\u202egnp.exe": "format character",  # right-to-left override
    "ab\u200bc": "format character",  # zero-width space
    "a\tb": "control character",
    "a\nb": "control character",
    "a\u00a0b": "other than the plain space",  # no-break space
    " Alice": "leading or trailing space",
    "Alice ": "leading or trailing space",
    "Al  ice": "two spaces",
    "": "empty",
    "   ": "empty",
    "x" * (MAX_NAME_LENGTH + 1): "limited to",
    "..": "start with a letter or a number",
    "-rf": "start with a letter or a number",
    "a;b": "outside the name set",
    "a<b>": "outside the name set",
}


@pytest.mark.parametrize("name", GOOD)
def test_the_documented_names_are_accepted(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name, why", list(BAD.items()), ids=[repr(n)[:24] for n in BAD])
def test_unmanageable_names_are_refused_with_the_reason(name, why):
    with pytest.raises(InvalidNameError, match=why):
        check_name(name)


def test_names_are_nfc_normalised():
    decomposed = unicodedata.normalize("NFD", "Zoë")
    assert len(decomposed) == 4 and check_name(decomposed) == "Zoë"


def _one(seed=0):
    return [NewTemplate(unit_vectors(1, seed=seed)[0], "x.png")]


def test_every_way_into_a_store_applies_the_rule(new_gallery):
    spec = new_gallery()
    with open_store(spec, MODEL, create=True) as store:
        for bad in ("a/b", "evil\u202egnp"):
            with pytest.raises(InvalidNameError):
                store.add_templates(bad, _one())
            with pytest.raises(InvalidNameError):  # an import
                store.add_people([(bad, {}, _one())])
        store.add_templates("Alice", _one())
        with pytest.raises(InvalidNameError):
            store.rename("Alice", "a/b")
        store.add_templates(unicodedata.normalize("NFD", "Zoë"), _one(1))
        assert sorted(p.name for p in store.people()) == ["Alice", "Zoë"]
        assert store.person(unicodedata.normalize("NFD", "zoë")).name == "Zoë"  # NFC and case ignored
        assert store.person("ALICE").name == "Alice"
    assert rows(spec, "SELECT count(*) FROM people") == [(2,)]
    check_consistent(spec)


def test_one_store_keeps_the_look_alike_rule_across_renames_removals_and_other_writers(new_gallery):
    """The skeletons are stored beside the names (one lookup a new person); what is checked is the names in the
    gallery at the time: a name renamed away, or removed, frees its look-alikes, and one written by another
    writer is seen."""
    spec, cyrillic = new_gallery(), "\u0420\u043e\u0435"  # Рое, all Cyrillic: Poe to the eye
    with open_store(spec, MODEL, create=True) as store, open_store(spec, MODEL) as other:
        store.add_templates("Poe", _one())
        with pytest.raises(InvalidNameError, match="could be taken for"):
            store.add_templates(cyrillic, _one(1))
        store.rename("Poe", "Peter")
        store.add_templates(cyrillic, _one(1))  # Poe's look-alike is free now
        other.add_templates("Ian", _one(3))
        with pytest.raises(InvalidNameError, match="could be taken for"):
            store.add_templates("lan", _one(4))  # another writer's person is seen
        other.delete("Ian")
        store.add_templates("lan", _one(4))
    assert sorted(name for (name,) in rows(spec, "SELECT name FROM people")) == sorted([cyrillic, "Peter", "lan"])


def test_a_name_enrolled_before_the_rule_can_still_be_shown_and_removed(new_gallery):
    spec = new_gallery()
    with open_store(spec, MODEL, create=True) as store:
        store.add_templates("legacy", _one())
    raw_rename(spec, "legacy", "old/name")
    out = cli("people", "show", "-g", spec, "old/name", "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["name"] == "old/name", out.stderr
    out = cli("people", "rename", "-g", spec, "old/name", "old name")
    assert out.returncode == 0 and "'old name'" in out.stdout
    assert cli("people", "remove", "-g", spec, "old name").returncode == 0
    assert rows(spec, "SELECT count(*) FROM people") == [(0,)]


def test_the_cli_refuses_a_bad_name_before_creating_anything(new_gallery):
    spec = new_gallery()
    out = cli("enroll", "-g", spec, "evil\u202egnp", att(3, 2))
    assert out.returncode == 2 and "invalid name" in out.stderr and "U+202E" in out.stderr
    assert "Traceback" not in out.stderr
    from siamface.gallery import gallery_exists

    assert not gallery_exists(spec)


def test_bulk_enrollment_checks_every_folder_name_first(new_gallery, tmp_path, pipeline):
    import shutil

    root = tmp_path / "people"
    for folder in ("Alice", "Bob\u200b"):
        (root / folder).mkdir(parents=True)
        shutil.copy(att(3 if folder == "Alice" else 4, 2), root / folder / "2.pgm")
    spec = new_gallery()
    with Gallery(spec, pipeline, create=True) as g:
        with pytest.raises(InvalidNameError, match="Bob"):
            g.enroll_bulk(root)
        assert g.store.people() == []


def test_accepted_names_can_be_managed_from_the_cli(gallery_file):
    for i, name in enumerate(["Zoë O’Neil", "李小龍", "O.J. (Jr.) & co + 2"]):
        out = cli("enroll", "-g", gallery_file, name, att(10, i + 1))
        assert out.returncode == 0 and "new person created" in out.stdout, out.stderr
        out = cli("people", "show", "-g", gallery_file, name, "--json")
        assert out.returncode == 0 and json.loads(out.stdout)["name"] == name
        out = cli("people", "remove", "-g", gallery_file, name)
        assert out.returncode == 0 and f"removed {name!r}" in out.stdout
    check_consistent(gallery_file)


#: Invisible characters that are letters or marks to Unicode (so today's category rule let them in), beside the
#: format characters it already refused; each is default-ignorable: it shows as nothing.
INVISIBLE = ["a\u034fb", "x\u3164", "\u115fAnna", "Bob\ufe0f", "Eve\U000e0100", "Mo\u180bna", "A\u200bb", "Bo\u2060b"]


def test_invisible_characters_and_the_answers_words_are_refused_by_the_cli(new_gallery):
    spec = new_gallery()
    for name in INVISIBLE:
        out = cli("enroll", "-g", spec, name, att(3, 2))
        assert out.returncode == 2 and "invalid name" in out.stderr and "Traceback" not in out.stderr, (name, out)
        assert "invisible" in out.stderr, out.stderr
    for name in ("unknown", "Ambiguous", "KNOWN", "ｕｎｋｎｏｗｎ"):  # what identify says of a face
        out = cli("enroll", "-g", spec, name, att(3, 2))
        assert out.returncode == 2 and "not names" in out.stderr, (name, out.stderr)
    from siamface.gallery import gallery_exists

    assert not gallery_exists(spec)


def test_look_alike_names_are_refused_or_normalised(new_gallery):
    spec = new_gallery()
    out = cli("enroll", "-g", spec, "Ａｌｉｃｅ", att(3, 2))  # full-width: NFKC
    assert out.returncode == 0, out.stderr
    assert [r[0] for r in rows(spec, "SELECT name FROM people")] == ["Alice"]
    for name, why in (
        ("P\u0430ul", "U+0430 CYRILLIC SMALL LETTER A"),  # a Cyrillic а among Latin letters
        ("\u041ca\u0440\u0438\u044f", "U+0061 LATIN SMALL LETTER A"),  # a Latin a among Cyrillic letters
    ):
        out = cli("enroll", "-g", spec, name, att(4, 2))
        assert out.returncode == 2 and why in out.stderr, (name, out.stderr)
    assert cli("enroll", "-g", spec, "Poe", att(4, 2)).returncode == 0
    assert cli("enroll", "-g", spec, "Ian", att(5, 2)).returncode == 0
    for name, taken in (("\u0420\u043e\u0435", "Poe"), ("lan", "Ian"), ("A1ice", "Alice")):  # all-Cyrillic Рое
        out = cli("enroll", "-g", spec, name, att(6, 2))
        assert out.returncode == 2 and f"could be taken for {taken!r}" in out.stderr, (name, out.stderr)
        assert cli("people", "rename", "-g", spec, "Poe" if taken != "Poe" else "Ian", name).returncode == 2
    assert sorted(r[0] for r in rows(spec, "SELECT name FROM people")) == ["Alice", "Ian", "Poe"]
    # names written before the rule (an older siamface) stay readable, renamable and removable
    raw_rename(spec, "Poe", "P\u0430ul")
    raw_rename(spec, "Ian", "unknown")
    listed = cli("people", "list", "-g", spec)
    assert listed.returncode == 0 and "P\u0430ul" in listed.stdout and "unknown" in listed.stdout
    assert cli("people", "rename", "-g", spec, "P\u0430ul", "Paul").returncode == 0  # its own look-alike: fine
    assert cli("people", "remove", "-g", spec, "unknown").returncode == 0
    assert sorted(r[0] for r in rows(spec, "SELECT name FROM people")) == ["Alice", "Paul"]
    check_consistent(spec)
