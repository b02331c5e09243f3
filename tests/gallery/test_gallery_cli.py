"""The gallery commands through `siamface.cli.main` (in the test process): exit codes, text and JSON, errors as
one line; and through the real console script: two processes enrolling into one gallery, and a bulk enrollment
killed with SIGKILL."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time

import numpy as np
import pytest
from conftest import att, att_rgb, faceless, planted_gallery, scene
from gallery_support import (  # noqa: F401
    PROBE,
    SIAMFACE,
    STRANGER,
    backend,
    base_gallery,
    bulk_folder,
    check_consistent,
    cli,
    cli_command,
    gallery_file,
    is_url,
    new_gallery,
    raw_rename,
    rows,
)
from PIL import Image

from siamface.embedding import create_encoder
from siamface.gallery import gallery_exists
from siamface.pipeline import DEFAULT_MODEL


def raw_text(spec, tmp_path) -> bytes:
    """Everything the gallery holds: the bytes of the SQLite file and its WAL, or every row of every table of
    the PostgreSQL database as text (bytea as hex)."""
    if not is_url(spec):
        return b"".join(p.read_bytes() for p in tmp_path.glob(f"{spec.name}*"))
    tables = [
        r[0] for r in rows(spec, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
    ]
    return b"".join(str(r[0]).encode() for t in tables for r in rows(spec, f"SELECT x::text FROM {t} x"))


def test_entry_point_is_installed():
    assert SIAMFACE, "the siamface console script is not on PATH: pip install -e ."


def test_enroll_check_identify(new_gallery, tmp_path):
    g = new_gallery("people")
    out = cli("enroll", "--gallery", g, "--folder", bulk_folder(tmp_path / "bulk", subjects=(3, 4)), "--json")
    assert out.returncode == 0, out.stderr
    assert [p["person"] for p in json.loads(out.stdout)["people"]] == ["s3", "s4"]
    assert "[2/2] s4" in out.stderr  # progress on stderr
    small = tmp_path / "small.png"  # s6's face at half size: under the enrolment minimum
    Image.fromarray(scene([(att_rgb(6, 4), 0.5, (50, 50))], size=(200, 200))).save(small)
    out = cli("enroll", "-g", g, "s6", att(6, 2), att(6, 3), small, "--strict")
    assert out.returncode == 0 and "2 template(s) added" in out.stdout
    assert "rejected (too-small)" in out.stdout
    # the refusal says what to do and what lowering the minimum costs
    assert "lower the minimum (--min-size of enroll and serve), at a cost" in out.stdout
    out = cli("enroll", "-g", g, "wall", tmp_path / "missing.png")
    assert out.returncode == 1 and "rejected (unreadable)" in out.stdout

    out = cli("verify", "--gallery", g, "--claim", "s3", att(3, PROBE), "--rule", "fraction")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("GRANTED") and "rule fraction 0.5" in out.stdout
    assert "threshold: default: FAR 1e-3" in out.stdout and out.stdout.count("  template ") == 3
    out = cli("verify", "-g", g, "--claim", "s4", att(3, PROBE), "--json")
    data = json.loads(out.stdout)
    assert out.returncode == 1 and data["accepted"] is False and len(data["templates"]) == 3
    assert data["rule"] == "best" and data["threshold"] == create_encoder(DEFAULT_MODEL).info.threshold
    assert "threshold_source" in data
    assert cli("verify", att(3, 1), att(3, 2)).returncode == 0  # two images: the plain 1:1 compare

    out = cli("identify", "-g", g, att(4, PROBE), att(STRANGER, PROBE), "--top", "2", "--json")
    assert out.returncode == 1, out.stderr  # the stranger is unknown
    results = json.loads(out.stdout)["results"]
    assert [r["faces"][0]["person"] for r in results] == ["s4", "unknown"]
    out = cli("identify", "-g", g, att(6, PROBE))
    assert out.returncode == 0 and ": s6 (" in out.stdout

    out = cli("gallery", "audit", "-g", g, "--json")
    kinds = [e["kind"] for e in json.loads(out.stdout)["entries"] if e["kind"] in ("verify", "identify")]
    assert kinds == ["identify", "identify", "identify", "verify", "verify"]


def test_identify_draws_names_and_scores(gallery_file, group_scene, tmp_path):
    from PIL import Image

    probe = tmp_path / "group.png"
    Image.fromarray(group_scene).save(probe)
    out = cli("identify", "-g", gallery_file, probe, "--top-k", "2", "--out", tmp_path / "out" / "named.png", "--json")
    assert out.returncode == 0, out.stderr
    faces = json.loads(out.stdout)["results"][0]["faces"]
    assert [(f["person"], f["status"], len(f["candidates"])) for f in faces] == [
        ("s3", "known", 2),
        ("s5", "known", 2),
        ("s7", "known", 2),
    ]
    drawn = np.asarray(Image.open(tmp_path / "out" / "named.png").convert("RGB"))
    assert drawn.shape == group_scene.shape
    x1, y1, x2, y2 = (int(round(v)) for v in faces[0]["box"])
    assert (drawn[y1:y2, x1] == (40, 200, 80)).all(axis=1).mean() > 0.5  # a green box where s3 is
    assert (drawn != group_scene).any(axis=2).mean() < 0.2  # the rest is the picture
    out = cli("identify", "-g", gallery_file, probe, att(STRANGER, PROBE), "--out", tmp_path / "many")
    assert out.returncode == 1 and sorted(p.name for p in (tmp_path / "many").iterdir()) == ["1.png", "group.png"]
    assert "unknown" in out.stdout and "margin 0.01" in out.stdout


def test_identify_exit_code_counts_probes_not_faces(gallery_file, tmp_path):
    from PIL import Image

    mixed = tmp_path / "mixed.png"  # an enrolled person beside a stranger in one picture
    Image.fromarray(scene([(att_rgb(3, PROBE), 2.0, (40, 120)), (att_rgb(STRANGER, PROBE), 2.0, (360, 120))])).save(
        mixed
    )
    out = cli("identify", "-g", gallery_file, mixed, "--json")
    faces = json.loads(out.stdout)["results"][0]["faces"]
    assert sorted(f["person"] for f in faces) == ["s3", "unknown"]
    assert out.returncode == 0, out.stderr  # the probe has a known face
    out = cli("identify", "-g", gallery_file, mixed, att(STRANGER, PROBE))
    assert out.returncode == 1  # the second probe has none


def test_identify_takes_folders(gallery_file, tmp_path):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(att(3, PROBE), folder / "sub" / "10.pgm")
    shutil.copy(att(STRANGER, PROBE), folder / "2.pgm")
    (folder / "notes.txt").write_text("not an image")
    out = cli("identify", "-g", gallery_file, folder, "--json")
    results = json.loads(out.stdout)["results"]
    assert [r["probe"] for r in results] == [str(folder / "2.pgm"), str(folder / "sub" / "10.pgm")]
    assert [r["faces"][0]["person"] for r in results] == ["unknown", "s3"]
    assert out.returncode == 1  # one probe (the stranger) has no known face
    (tmp_path / "empty").mkdir()
    out = cli("identify", "-g", gallery_file, tmp_path / "empty")
    assert out.returncode == 2 and "a folder with no image in it" in out.stderr and "Traceback" not in out.stderr


def test_management_commands(gallery_file):
    g = gallery_file
    out = cli("people", "list", "-g", g)
    assert out.returncode == 0 and "s3\t3 template(s)" in out.stdout and "7 people" in out.stdout
    out = cli("people", "show", "-g", g, "s4", "--json")
    assert out.returncode == 0 and len(json.loads(out.stdout)["template_list"]) == 3
    assert cli("people", "rename", "-g", g, "s4", "Fourth").returncode == 0
    out = cli("people", "remove", "-g", g, "fourth")
    assert out.returncode == 0 and "removed 'Fourth'" in out.stdout
    assert rows(g, "SELECT count(*) FROM people") == [(6,)]
    out = cli("gallery", "stats", "-g", g, "--json")
    assert json.loads(out.stdout)["people"] == 6 and json.loads(out.stdout)["model"] == DEFAULT_MODEL
    from siamface.gallery import SCHEMA_VERSION, postgres

    assert json.loads(out.stdout)["schema_version"] == (postgres.SCHEMA_VERSION if is_url(g) else SCHEMA_VERSION)
    out = cli("gallery", "reembed", "-g", g)
    assert out.returncode == 2 and "no kept image" in out.stderr


def test_people_remove_leaves_no_trace_of_the_name_in_the_file(new_gallery, tmp_path):
    """Every row, blob and string naming the person goes: the raw bytes of the file and its WAL are read
    (PostgreSQL: every row of every table)."""
    name = "Zebulon Quigglesworth"
    folder = tmp_path / name
    folder.mkdir()
    for i in (2, 3, 4):
        shutil.copy(att(5, i), folder / f"{name} {i}.pgm")  # the name is in every template's source
    g = new_gallery("people")
    out = cli(
        "enroll",
        "-g",
        g,
        name,
        *sorted(folder.iterdir()),
        "--keep-images",
        "--metadata",
        json.dumps({"badge": f"{name} #42"}),
    )
    assert out.returncode == 0, out.stderr
    assert cli("enroll", "-g", g, "s6", att(6, 2), att(6, 3)).returncode == 0
    assert cli("verify", "-g", g, "--claim", name, att(5, 1)).returncode == 0
    assert cli("verify", "-g", g, "--claim", name, att(6, 1)).returncode == 1
    assert cli("identify", "-g", g, att(5, 1)).returncode == 0

    def raw() -> bytes:
        return raw_text(g, tmp_path)

    needles = [name.encode(), name.encode("utf-16-le"), b"Zebulon", b"Quigglesworth"]
    assert name.encode() in raw()
    out = cli("people", "remove", "-g", g, name)
    assert out.returncode == 0, out.stderr
    assert [n for n in needles if n in raw()] == []
    check_consistent(g)
    assert rows(g, "SELECT count(*) FROM templates") == [(2,)]
    audit = json.loads(cli("gallery", "audit", "-g", g, "--json").stdout)["entries"]
    assert all(name not in json.dumps(e) for e in audit)  # decisions and changes alike
    assert [e["kind"] for e in audit] == ["delete", "identify", "verify", "verify", "enrol", "enrol"]
    assert [e["claimed"].startswith("removed:") for e in audit if e["kind"] == "verify"] == [True, True]


def test_export_import_round_trip_merge_and_refusals(gallery_file, new_gallery, tmp_path):
    export = tmp_path / "people.jsonl"
    out = cli("gallery", "export", "-g", gallery_file, export, "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["people"] == 7, out.stderr
    lines = export.read_text().splitlines()
    header = json.loads(lines[0])
    assert header["format"] == "siamface-gallery" and header["version"] == 1 and len(lines) == 8
    assert header["model"]["name"] == DEFAULT_MODEL
    assert header["model"]["embedding_size"] == create_encoder(DEFAULT_MODEL).info.embedding_size
    assert "image" not in lines[1]
    copy = new_gallery("copy")
    out = cli("gallery", "import", "-g", copy, export)
    assert out.returncode == 0 and "7 new people" in out.stdout, out.stderr
    assert cli("identify", "-g", copy, att(4, PROBE)).stdout.count(": s4 (") == 1
    before = rows(
        gallery_file,
        "SELECT p.name, t.embedding FROM templates t JOIN people p ON p.id = t.person_id ORDER BY p.name, t.id",
    )
    assert (
        rows(
            copy,
            "SELECT p.name, t.embedding FROM templates t JOIN people p ON p.id = t.person_id ORDER BY p.name, t.id",
        )
        == before
    )  # the very same bytes
    out = cli("gallery", "import", "-g", copy, export)
    assert out.returncode == 2 and "7 name(s) already in" in out.stderr and "--merge" in out.stderr
    out = cli("gallery", "import", "-g", copy, export, "--merge", "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["skipped_duplicates"] == len(before)
    assert rows(copy, "SELECT count(*) FROM templates") == [(len(before),)]
    other = tmp_path / "other.jsonl"
    header["model"]["version"] = "v2-retrained"
    other.write_text("\n".join([json.dumps(header)] + lines[1:]) + "\n")
    out = cli("gallery", "import", "-g", copy, other)
    assert out.returncode == 2 and "v2-retrained" in out.stderr
    (tmp_path / "junk.jsonl").write_text('{"format": "something-else"}\n')
    new = new_gallery("new")
    out = cli("gallery", "import", "-g", new, tmp_path / "junk.jsonl")
    assert out.returncode == 2 and "not a siamface gallery export" in out.stderr
    assert not gallery_exists(new)
    assert cli("gallery", "export", "-g", gallery_file, tmp_path / "x.jsonl", "--with-images").returncode == 2


def test_import_merge_refuses_another_persons_face_unless_forced(gallery_file, tmp_path):
    """An export whose "s4" holds s5's templates must not merge s5's face into the enrolled s4 (the rule of
    enrolling into an existing person); --force merges them; --force alone is an error."""
    export = tmp_path / "people.jsonl"
    assert cli("gallery", "export", "-g", gallery_file, export).returncode == 0
    header, *people = [json.loads(line) for line in export.read_text().splitlines()]
    [s5] = [p for p in people if p["name"] == "s5"]
    crafted = tmp_path / "crafted.jsonl"
    header = {**header, "people": 1, "templates": len(s5["templates"])}  # what the file holds
    crafted.write_text("\n".join(json.dumps(x) for x in (header, {**s5, "name": "S4"})) + "\n")
    before = rows(gallery_file, "SELECT count(*) FROM templates")
    out = cli("gallery", "import", "-g", gallery_file, crafted, "--merge", "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["refused_not_matching"] == len(s5["templates"]) and summary["templates"] == 0, summary
    assert rows(gallery_file, "SELECT count(*) FROM templates") == before
    assert cli("identify", "-g", gallery_file, att(5, PROBE)).stdout.count(": s5 (") == 1
    out = cli("gallery", "import", "-g", gallery_file, crafted, "--merge")
    assert "refused: matching none of the person's templates (--force adds them)" in out.stdout
    assert cli("gallery", "import", "-g", gallery_file, crafted, "--force").returncode == 2
    out = cli("gallery", "import", "-g", gallery_file, crafted, "--merge", "--force", "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["templates"] == len(s5["templates"]), out.stdout


def test_import_refuses_images_that_are_not_the_faces_of_their_templates(new_gallery, tmp_path):
    # This attack run (a crafted export): the import's gates look at the templates only, and the images travel
    # with them unchecked; `gallery reembed` then makes each template from its image. Templates of alice's own,
    # nudged (cosine 0.9: they match her and are no near-duplicates), carrying mallory's face crops, merged into
    # alice; after a reembed to another model mallory (s5) was granted as alice. An image kept by an import
    # must show the face of its template (the gallery's model, its 1:1 threshold), else nothing is imported.
    g, other = new_gallery("people"), new_gallery("other")
    assert cli("enroll", "-g", g, "--keep-images", "--min-size", "40", "alice", att(3, 1), att(3, 2)).returncode == 0
    assert (
        cli("enroll", "-g", other, "--keep-images", "--min-size", "40", "mallory", att(5, 1), att(5, 2)).returncode == 0
    )
    mine, theirs = tmp_path / "alice.jsonl", tmp_path / "mallory.jsonl"
    assert cli("gallery", "export", "-g", g, mine, "--with-images").returncode == 0
    assert cli("gallery", "export", "-g", other, theirs, "--with-images").returncode == 0
    header, alice = [json.loads(line) for line in mine.read_text().splitlines()]
    mallory = json.loads(theirs.read_text().splitlines()[1])
    rng = np.random.default_rng(0)
    rows_ = []
    for own, face in zip(alice["templates"], mallory["templates"]):
        e = np.frombuffer(base64.b64decode(own["embedding"]), "<f4").astype(np.float64)
        n = rng.normal(size=e.shape)
        n -= (n @ e) * e
        v = 0.9 * e + np.sqrt(1 - 0.81) * n / np.linalg.norm(n)
        rows_.append({"embedding": base64.b64encode(v.astype("<f4").tobytes()).decode(), "image": face["image"]})
    crafted = tmp_path / "crafted.jsonl"
    crafted.write_text(json.dumps(header) + "\n" + json.dumps({"name": "alice", "templates": rows_}) + "\n")
    before = rows(g, "SELECT count(*) FROM templates")
    for extra in (("--merge",), ("--merge", "--force")):
        out = cli("gallery", "import", "-g", g, crafted, *extra)
        assert out.returncode == 2 and "Traceback" not in out.stderr, (out.stdout, out.stderr)
        assert "not the face of its template" in out.stderr, out.stderr
        assert rows(g, "SELECT count(*) FROM templates") == before
    # an honest export with images goes into a new gallery that keeps them, and reembeds
    again = new_gallery("again")
    out = cli("gallery", "import", "-g", again, mine, "--keep-images", "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["templates"] == 2, (out.stdout, out.stderr)


@pytest.mark.parametrize("name", [["s9"], {"s9": 1}, 9, None])
def test_import_of_a_crafted_name_is_a_one_line_error(gallery_file, tmp_path, name):
    # The attack run (a user fed a crafted export): a person's name that is not a string was a traceback
    # (a list, an object) or reached the name checks as a number.
    export = tmp_path / "people.jsonl"
    assert cli("gallery", "export", "-g", gallery_file, export).returncode == 0
    header, first, *_ = [json.loads(line) for line in export.read_text().splitlines()]
    crafted = tmp_path / "crafted.jsonl"
    crafted.write_text("\n".join(json.dumps(x) for x in (header, {**first, "name": name})) + "\n")
    for extra in ((), ("--force",), ("--merge",)):
        out = cli("gallery", "import", "-g", gallery_file, crafted, *extra)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
        assert "crafted.jsonl:2: malformed person entry" in out.stderr, out.stderr


@pytest.mark.parametrize("where", ["header", "person"])
def test_import_of_a_file_that_is_not_text_is_a_one_line_error(gallery_file, tmp_path, where):
    # The second attack run: bytes that are not UTF-8 (a binary file given by mistake, or a crafted export) were a
    # UnicodeDecodeError traceback, the header's or a later line's
    export = tmp_path / "people.jsonl"
    assert cli("gallery", "export", "-g", gallery_file, export).returncode == 0
    header = export.read_bytes().splitlines()[0]
    crafted = tmp_path / "crafted.jsonl"
    crafted.write_bytes(b"\xfc\x00\x9c binary\n" if where == "header" else header + b'\n{"name": "s\xff"}\n')
    new = tmp_path / "new.db"
    for target in (gallery_file, new):
        out = cli("gallery", "import", "-g", target, crafted)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
        line = 1 if where == "header" else 2
        assert f"crafted.jsonl:{line}: not a siamface gallery export (not UTF-8 text)" in out.stderr, out.stderr
    assert not new.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["verify", "--claim", "nobody", att(3, 1)], "no person named 'nobody'"),
        (["verify", "--claim", "s3", "FACELESS"], "no face found"),
        (["verify", "--claim", "s3", att(3, 1), att(3, 2)], "takes one PROBE image"),
        (["verify", "--claim", "s3", att(3, 1), "--fraction", "0.3"], "--rule fraction only"),
        (["enroll", "x", "--camera", "57"], "camera 57: cannot be opened"),
        (["enroll", "x"], "give image files"),
        (["enroll", "s3", att(3, 1).parent], "is a folder, not an image: 'enroll s3 --folder"),
        (["enroll", att(3, 1).parent.parent], "is a folder: 'enroll --folder"),
        (["people", "remove", "nobody"], "no person named"),
    ],
)
def test_errors_exit_2_with_one_line(gallery_file, tmp_path, args, message):
    wall = tmp_path / "wall.png"
    from PIL import Image

    Image.fromarray(faceless()).save(wall)
    args = [wall if a == "FACELESS" else a for a in args]
    out = (
        cli(*args[:2], "-g", gallery_file, *args[2:])
        if args[0] in ("gallery", "people")
        else cli(*args, "-g", gallery_file)
    )
    assert out.returncode == 2, out
    assert message in out.stderr and "Traceback" not in out.stderr


def test_a_folder_given_as_the_gallery_is_one_line(tmp_path):
    """`enroll -g photos/ ...` (a folder where the gallery file goes): the error, not a warning to chmod 600 the
    folder above it."""
    folder = tmp_path / "photos"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    out = cli("enroll", "-g", folder, "s3", att(3, 1))
    assert out.returncode == 2 and out.stderr == f"siamface: error: {folder} is a directory, not a gallery file\n"


def test_missing_gallery_is_an_error_not_a_new_file(new_gallery):
    none = new_gallery("none")
    out = cli("identify", "-g", none, att(3, 1))
    assert out.returncode == 2 and "no gallery at" in out.stderr and not gallery_exists(none)


@pytest.mark.slow  # both runs use the PostgreSQL server
def test_a_merge_skips_a_near_duplicate_by_the_models_own_measure(tmp_path):
    """The same photo moved 2 px scores about 0.992 with SFace: below the generic 0.995, above SFace's
    near-duplicate similarity (0.98). Merged into a gallery that has the photo, it is skipped, as enrolment
    would refuse it. (`sface`: the model whose own measure is furthest from the generic one.)"""
    from PIL import Image

    assert create_encoder("sface").info.duplicate < 0.99
    shifted = tmp_path / "shifted.png"
    Image.fromarray(np.ascontiguousarray(np.roll(att_rgb(3, 2), 2, axis=1))).save(shifted)
    a, b, export = tmp_path / "a.db", tmp_path / "b.db", tmp_path / "b.jsonl"
    assert cli("enroll", "-g", a, "s3", att(3, 2), "--model", "sface").returncode == 0
    out = cli("enroll", "-g", a, "s3", shifted, "--json")
    assert out.returncode == 1 and "near-duplicate" in out.stdout + out.stderr
    assert cli("enroll", "-g", b, "s3", shifted, "--model", "sface").returncode == 0
    assert cli("gallery", "export", "-g", b, export).returncode == 0
    out = cli("gallery", "import", "-g", a, export, "--merge", "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["skipped_duplicates"] == 1, out.stdout
    assert rows(a, "SELECT count(*) FROM templates") == [(1,)]


def test_export_import_across_backends(gallery_file, backend, tmp_path):
    """SQLite -> PostgreSQL -> SQLite (and the other way round): the same people, the very same bytes."""
    from gallery_support import postgres_cluster

    other = tmp_path / "other.db" if backend == "postgres" else postgres_cluster().new_database()
    back = postgres_cluster().new_database() if backend == "postgres" else tmp_path / "back.db"
    query = "SELECT p.name, t.source, t.embedding FROM templates t JOIN people p ON p.id = t.person_id ORDER BY p.name, t.id"
    before = rows(gallery_file, query)
    for source, target, name in ((gallery_file, other, "there"), (other, back, "back")):
        export = tmp_path / f"{name}.jsonl"
        out = cli("gallery", "export", "-g", source, export)
        assert out.returncode == 0, out.stderr
        out = cli("gallery", "import", "-g", target, export, "--json")
        assert out.returncode == 0 and json.loads(out.stdout)["new_people"] == 7, out.stderr
        assert rows(target, query) == before
    out = cli("identify", "-g", back, att(4, PROBE))
    assert out.returncode == 0 and ": s4 (" in out.stdout


def test_migrate_reports_the_schema_version(gallery_file):
    from siamface.gallery import SCHEMA_VERSION, postgres

    SCHEMA_VERSION = postgres.SCHEMA_VERSION if is_url(gallery_file) else SCHEMA_VERSION
    out = cli("gallery", "migrate", "-g", gallery_file, "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["schema_version"] == SCHEMA_VERSION and data["migrated"] is False
    out = cli("gallery", "migrate", "-g", gallery_file)
    assert out.returncode == 0 and f"schema version {SCHEMA_VERSION} (up to date)" in out.stdout


def test_two_processes_enrolling_the_same_people(new_gallery, tmp_path):
    g = new_gallery("people")
    bulk = bulk_folder(tmp_path / "bulk", subjects=(3, 4, 6, 7))
    procs = [
        subprocess.Popen(
            cli_command() + ["enroll", "-g", str(g), "--bulk", str(bulk), "--force"],  # t0..t3 are s8 again
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode in (0, 1), err  # 1: the second found every image already enrolled
    check_consistent(g)
    counts = rows(
        g, "SELECT name, (SELECT count(*) FROM templates t WHERE t.person_id = p.id) FROM people p ORDER BY name"
    )
    assert counts == [("s3", 3), ("s4", 3), ("s6", 3), ("s7", 3)]


def test_sigkill_during_bulk_enrollment_leaves_whole_people(new_gallery, tmp_path):
    g = new_gallery("people")
    subjects = (3, 4, 6, 7, 8, 9)
    bulk = bulk_folder(tmp_path / "bulk", subjects=subjects)
    for k in range(4):  # more people: the kill lands mid-way
        shutil.copytree(bulk / "s8", bulk / f"t{k}")
    proc = subprocess.Popen(
        cli_command() + ["enroll", "-g", str(g), "--bulk", str(bulk), "--force"],  # t0..t3 are s8 again
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 90
    people = 0
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
        if is_url(g) or g.exists():
            try:
                if is_url(g):
                    people = rows(g, "SELECT count(*) FROM people")[0][0]
                else:
                    db = sqlite3.connect(f"file:{g}?mode=ro", uri=True, timeout=1)
                    people = db.execute("SELECT count(*) FROM people").fetchone()[0]
                    db.close()
            except Exception:  # noqa: BLE001 - not created yet, or busy
                continue
            if people >= 2:
                break
    assert proc.poll() is None, "enrollment finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    check_consistent(g)
    counts = rows(g, "SELECT name, (SELECT count(*) FROM templates t WHERE t.person_id = p.id) FROM people p")
    assert 2 <= len(counts) < len(subjects) + 4
    assert all(n == 3 for _, n in counts), counts  # each person entirely, or not at all
    out = cli("enroll", "-g", g, "--bulk", bulk, "--force")  # and the gallery takes the rest afterwards
    assert out.returncode == 1 or out.returncode == 0
    check_consistent(g)
    assert len(rows(g, "SELECT name FROM people")) == len(subjects) + 4


def test_export_images_gives_a_training_folder(new_gallery, tmp_path):
    from siamface.training.data import load_faces

    plain = new_gallery("plain")
    assert cli("enroll", "--gallery", plain, "--folder", bulk_folder(tmp_path / "a", subjects=(3,))).returncode == 0
    refused = cli("gallery", "export-images", "--gallery", plain, tmp_path / "none")
    assert refused.returncode == 2 and "--keep-images" in refused.stderr

    kept = new_gallery("kept")
    bulk = bulk_folder(tmp_path / "b", subjects=(3, 4, 5))
    assert cli("enroll", "--gallery", kept, "--folder", bulk, "--keep-images").returncode == 0
    assert cli("people", "rename", "s5", "x/../y", "--gallery", kept).returncode == 2  # refused today,
    raw_rename(kept, "s5", "x/../y")  # but an older gallery may hold such a name: not a path
    out = cli("gallery", "export-images", "--gallery", kept, tmp_path / "train", "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["people"] == 3 and summary["images"] >= 6
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == ["s3", "s4", "x_.._y"]
    faces = load_faces(tmp_path / "train", cache_dir="none")  # what `siamface train` reads
    assert faces.identities == ["s3", "s4", "x_.._y"] and len(faces) == summary["images"]
    written = [tmp_path / "train", *(tmp_path / "train").rglob("*")]
    assert {oct(p.stat().st_mode & 0o777) for p in written} == {"0o700", "0o600"}  # owner only: biometric
    again = cli("gallery", "export-images", "--gallery", kept, tmp_path / "train")
    assert again.returncode == 2 and "not an empty folder" in again.stderr


def test_export_images_follows_no_link_and_keeps_no_folder_others_can_write(new_gallery, tmp_path):
    import os

    kept = new_gallery("kept")
    assert (
        cli(
            "enroll", "--gallery", kept, "--folder", bulk_folder(tmp_path / "b", subjects=(3,)), "--keep-images"
        ).returncode
        == 0
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    link = tmp_path / "link"
    link.symlink_to(elsewhere, target_is_directory=True)
    out = cli("gallery", "export-images", "--gallery", kept, link)
    assert out.returncode == 2 and "link" in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert list(elsewhere.iterdir()) == []  # nothing written through the link
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # anyone could have prepared it, or could add to it while we write
    out = cli("gallery", "export-images", "--gallery", kept, shared)
    assert out.returncode == 0, out.stderr
    assert oct(shared.stat().st_mode & 0o777) == "0o700"
    assert {oct(p.stat().st_mode & 0o777) for p in shared.rglob("*")} == {"0o700", "0o600"}
    if os.geteuid() == 0:  # a folder of another user is refused (only root can make one here)
        theirs = tmp_path / "theirs"
        theirs.mkdir(mode=0o777)
        os.chown(theirs, 65534, 65534)
        out = cli("gallery", "export-images", "--gallery", kept, theirs)
        assert out.returncode == 2 and "another user" in out.stderr
        assert list(theirs.iterdir()) == []


def test_enroll_says_whether_it_creates_or_adds_and_refuses_a_stranger_without_force(gallery_file, tmp_path):
    g = gallery_file
    out = cli("enroll", "-g", g, "S3", att(3, PROBE))  # names match ignoring case
    assert out.returncode == 0, out.stderr
    assert "S3: 1 template(s) added to the existing person 's3' (names match ignoring case) (4 in total)" in out.stdout
    out = cli("enroll", "-g", g, "s3", att(10, 1))
    assert out.returncode == 1 and "nothing added to the existing person 's3' (4 in total)" in out.stdout
    assert "rejected (other-person)" in out.stdout and "does not match" in out.stdout and "--force" in out.stdout
    out = cli("enroll", "-g", g, "s3", att(10, 1), "--force", "--json")
    report = json.loads(out.stdout)["people"][0]
    assert out.returncode == 0 and report["existing"] and len(report["added"]) == 1
    out = cli("enroll", "-g", g, "Ten", att(10, 2))  # s10's face is s3's now: a face belongs to one person
    assert out.returncode == 1 and "rejected (already-enrolled)" in out.stdout and "'s3'" in out.stdout
    assert "Ten" not in cli("people", "list", "-g", g).stdout
    out = cli("enroll", "-g", g, "Ten", att(10, 2), "--force")
    assert out.returncode == 0 and "Ten: new person created, 1 template(s) added" in out.stdout
    wall = tmp_path / "wall.png"
    from PIL import Image

    Image.fromarray(faceless()).save(wall)
    out = cli("enroll", "-g", g, "Newcomer", wall)  # issue 15, defect 11
    assert out.returncode == 1 and "Newcomer: not enrolled, no image passed; no person was created" in out.stdout
    assert "existing" not in out.stdout
    assert "Newcomer" not in cli("people", "list", "-g", g).stdout
    check_consistent(g)


def test_identify_answers_the_good_probes_around_a_bad_one(gallery_file, tmp_path):
    """Issue 15, defect 11: `identify p1 bad.jpg p2` printed nothing for p1 and p2."""
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    out = cli("identify", "-g", gallery_file, att(4, PROBE), bad, att(6, PROBE))
    assert out.returncode == 2
    assert ": s4 (" in out.stdout and ": s6 (" in out.stdout
    assert out.stderr.count("siamface: error:") == 1 and "bad.jpg" in out.stderr and "Traceback" not in out.stderr
    out = cli("identify", "-g", gallery_file, att(4, PROBE), bad, "--json")
    data = json.loads(out.stdout)
    assert out.returncode == 2 and [r["faces"][0]["person"] for r in data["results"]] == ["s4"]
    assert [e["probe"] for e in data["errors"]] == [str(bad)]


def test_an_unknown_claim_points_to_a_command_that_exists(gallery_file):
    out = cli("verify", "-g", gallery_file, "--claim", "nobody", att(3, PROBE))
    assert out.returncode == 2 and "see `siamface people list`" in out.stderr
    assert cli("people", "list", "-g", gallery_file).returncode == 0


def test_a_gallery_of_the_former_default_keeps_its_model(tmp_path):
    """A gallery enrolled with `dlib-flip+facenet` (the default before `sface`) is searched and verified with
    it, without --model: the right person found, the model and its own thresholds in the answers, and a note
    on how to move. Judged by the default model's thresholds instead (its 1:1 threshold, under the former
    model's 0.877 and up), the stranger's score would pass."""
    former = "dlib-flip+facenet"
    assert DEFAULT_MODEL != former
    info = create_encoder(former).info
    g = tmp_path / "former.db"
    for person in (3, 4):
        out = cli("enroll", "-g", g, f"s{person}", att(person, 2), att(person, 3), "--model", former)
        assert out.returncode == 0, out.stderr
    out = cli("identify", "-g", g, att(3, PROBE), att(5, PROBE), "--json")
    assert out.returncode == 1, out.stderr  # s5 was never enrolled: unknown
    results = json.loads(out.stdout)["results"]
    assert [r["model"] for r in results] == [former, former]
    assert [r["faces"][0]["status"] for r in results] == ["known", "unknown"] and results[0]["faces"][0][
        "person"
    ] == "s3"
    # 1:N by FPIR for this gallery's size, from the former model's own tail (never below its 1:1 threshold)
    assert all(info.threshold <= r["threshold"] < 1 for r in results)
    assert results[1]["faces"][0]["similarity"] > create_encoder(DEFAULT_MODEL).info.threshold
    assert f"bound to model {former}, which it keeps using" in out.stderr
    assert f"`siamface gallery reembed --model {DEFAULT_MODEL}` moves it" in out.stderr
    out = cli("verify", "-g", g, "--claim", "s4", att(4, PROBE), "--json")
    answer = json.loads(out.stdout)
    assert out.returncode == 0 and answer["model"] == former and answer["threshold"] == info.threshold
    assert cli("verify", "-g", g, "--claim", "s4", att(5, PROBE)).returncode == 1


def test_a_gallery_keeps_its_model_when_the_default_changes(tmp_path):
    """A gallery bound to another model than the default (e.g. made with dlib-resnet before the default became
    a fused model, then sface) keeps working without --model, says how to move, and `gallery reembed` moves it."""
    other = "dlib-resnet" if DEFAULT_MODEL != "dlib-resnet" else "facenet"
    g = tmp_path / "old.db"
    out = cli("enroll", "-g", g, "s3", att(3, 2), att(3, 3), "--model", other, "--keep-images")
    assert out.returncode == 0, out.stderr
    out = cli("identify", "-g", g, att(3, PROBE), "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["results"][0]["model"] == other
    assert f"bound to model {other}, which it keeps using" in out.stderr
    assert f"gallery reembed --model {DEFAULT_MODEL}" in out.stderr
    out = cli("gallery", "reembed", "-g", g, "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["to"] == DEFAULT_MODEL, out.stderr
    out = cli("identify", "-g", g, att(3, PROBE), "--json")
    assert (
        out.returncode == 0
        and json.loads(out.stdout)["results"][0]["model"] == DEFAULT_MODEL
        and "note" not in out.stderr
    )


def test_a_gallery_file_created_but_not_yet_bound_is_enrolled_into(tmp_path):
    """The state a second enrolling process can find (the first has created the SQLite file, not yet bound
    it; or an earlier attempt stopped there): enrolment binds it to the default model, instead of failing
    with "not bound to a model yet" (seen as a rare failure of two processes enrolling into a new gallery)."""
    g = tmp_path / "new.db"
    g.touch()
    out = cli("enroll", "-g", g, "s3", att(3, 2))
    assert out.returncode == 0, out.stderr
    assert dict(rows(g, "SELECT key, value FROM meta"))["model_name"] == DEFAULT_MODEL
    out = cli("identify", "-g", g, att(3, PROBE))
    assert out.returncode == 0 and ": s3 (" in out.stdout, out.stdout + out.stderr


def test_no_templates_are_written_into_a_gallery_another_user_owns_or_may_change(tmp_path):
    """A file planted where a gallery will be made (empty, owned by someone else, or in a folder anyone may
    write): enrolling or importing into it would hand every template to its owner. Refused, nothing written;
    the same gallery made the caller's own (0600, a private folder) is enrolled into."""
    planted = planted_gallery(tmp_path / "shared")
    shared = planted.parent
    out = cli("enroll", "-g", planted, "s3", att(3, 2))
    assert out.returncode == 2 and "owned by another user (uid 65534)" in out.stderr, out.stderr
    assert planted.stat().st_size == 0
    export = tmp_path / "one.jsonl"
    mine = tmp_path / "mine.db"
    assert cli("enroll", "-g", mine, "s3", att(3, 2)).returncode == 0
    assert cli("gallery", "export", "-g", mine, export).returncode == 0
    out = cli("gallery", "import", "-g", planted, export)
    assert out.returncode == 2 and "owned by another user" in out.stderr and planted.stat().st_size == 0
    os.chown(planted, os.getuid(), os.getgid())
    shared.chmod(0o777)  # anyone may replace the file in its folder
    out = cli("enroll", "-g", planted, "s3", att(3, 2))
    assert out.returncode == 2 and "may be written by other users" in out.stderr
    shared.chmod(0o700)
    planted.chmod(0o600)
    assert cli("enroll", "-g", planted, "s3", att(3, 2)).returncode == 0


def test_identify_out_writes_named_faces_for_this_user_only_and_through_no_link(tmp_path):
    # `identify --out` draws each face with the name it was given: it was written 0644 into a folder made
    # 0755 (anyone on the machine could see who is in which photo) and through a link planted at its name
    # (the link's target overwritten). The contact sheet of `cluster --out` was already kept private.
    gallery = tmp_path / "people.db"
    assert cli("enroll", "-g", gallery, "s3", att(3, 2)).returncode == 0
    elsewhere = tmp_path / "elsewhere.png"
    elsewhere.write_bytes(b"not yours to overwrite")
    named = tmp_path / "named.png"
    named.symlink_to(elsewhere)
    assert cli("identify", "-g", gallery, att(3, 1), "--out", named).returncode == 0
    assert elsewhere.read_bytes() == b"not yours to overwrite" and not named.is_symlink()
    assert (named.stat().st_mode & 0o777) == 0o600
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    assert cli("identify", "-g", gallery, att(3, 1), att(STRANGER, 1), "--out", shared).returncode == 1
    assert (shared.stat().st_mode & 0o777) == 0o700
    assert sorted((p.name, p.stat().st_mode & 0o777) for p in shared.iterdir()) == [
        ("1-1.png", 0o600),
        ("1.png", 0o600),
    ]
