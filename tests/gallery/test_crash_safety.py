"""Nothing is lost when several writers share a gallery or one of them dies: an import that fails never takes
with it what another process enrolled meanwhile, and a process killed while it wrote a file beside the gallery
leaves no copy of a person's templates behind once that person is removed. Through the real command (in this
process, or a process of its own killed with SIGKILL), on both backends where a gallery is shared."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import att
from gallery_support import (  # noqa: F401
    backend,
    check_consistent,
    cli,
    cli_command,
    is_url,
    new_gallery,
    rows,
    store_spec,
)

from siamface.gallery import Gallery, gallery_exists


def test_a_failed_import_keeps_what_another_process_enrolled_in_the_gallery_it_created(
    new_gallery, tmp_path, pipeline, monkeypatch
):
    """`gallery import` into a gallery that does not exist creates it, and drops it again when the import
    fails. Another client that enrolled into the new gallery meanwhile (a kiosk, a server started on it) lost
    that enrollment with it: the command that enrolled had said "created"."""
    from siamface.gallery import exchange

    source = new_gallery("source")
    with Gallery(source, pipeline, create=True) as g:
        for s in (3, 4):
            g.enroll(f"s{s}", [att(s, 2), att(s, 3)])
    export = tmp_path / "people.jsonl"
    assert cli("gallery", "export", "-g", source, export).returncode == 0

    target = new_gallery("target")
    checked = exchange._check_images
    enrolled = []

    def another_client_enrolls_meanwhile(*args, **kwargs):
        # the import has created the gallery; before its transaction, someone else enrolls s3 into it
        with Gallery(target, pipeline) as other:
            enrolled.extend(other.enroll("s3", [att(3, 4), att(3, 6)]).added)
        return checked(*args, **kwargs)

    monkeypatch.setattr(exchange, "_check_images", another_client_enrolls_meanwhile)
    out = cli("gallery", "import", "-g", target, export)
    assert out.returncode == 2 and "already in" in out.stderr, out.stderr  # s3 is taken: nothing imported
    assert gallery_exists(target)  # the gallery holds another client's work: it stays
    check_consistent(target)
    assert rows(target, "SELECT p.name, count(*) FROM people p JOIN templates t ON t.person_id = p.id GROUP BY 1") == [
        ("s3", len(enrolled))
    ]
    assert enrolled


def test_a_failed_import_still_removes_the_empty_gallery_it_created(new_gallery, tmp_path):
    """What the fix above keeps: a gallery made by an import that failed, used by nobody else, goes again."""
    bad = tmp_path / "bad.jsonl"
    header = (
        '{"format": "siamface-gallery", "version": 1, "embedding_encoding": "base64 float32 little-endian", '
        '"model": {"name": "m", "version": "1", "embedding_size": 128}}'
    )
    bad.write_text(header + "\n" + '{"name": "x", "templates": [{"embedding": "AAAA"}]}\n')
    target = new_gallery("target")
    out = cli("gallery", "import", "-g", target, bad)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert not gallery_exists(target)
    if not is_url(target):
        assert not list(tmp_path.glob("target.db*"))


#: A process that searches a gallery through its FAISS index (forced on from the first template) and is killed
#: with SIGKILL while it saves that index beside the gallery: the index is written whole, the rename into place
#: never comes. What a server killed during a save (the OOM killer, a power cut) leaves.
_KILLED_WHILE_SAVING = """
import os, signal, sys
import numpy as np
from siamface.gallery import open_store
from siamface.gallery.index import GalleryIndex

os.replace = lambda src, dst: os.kill(os.getpid(), signal.SIGKILL)  # the moment between write and rename
with open_store(sys.argv[1]) as store:
    index = GalleryIndex(store, approx_min=1)
    index.search(np.ones((1, store.model.embedding_size), np.float32) / store.model.embedding_size**0.5)
    index.close()  # waits for the writer: killed there
"""


def _files_holding(folder: Path, needles: list[bytes]) -> list[str]:
    """The files under `folder` that hold any of `needles`."""
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and any(n in p.read_bytes() for n in needles)
    )


def _three_people(tmp_path: Path, pipeline) -> tuple[Path, Path, list[bytes]]:
    """(folder, gallery, s3's templates as stored): s3, s4, s5 enrolled into an SQLite gallery alone in a folder."""
    folder = tmp_path / "gallery"
    folder.mkdir()
    path = folder / "people.db"
    with Gallery(path, pipeline, create=True) as g:
        for s in (3, 4, 5):
            assert g.enroll(f"s{s}", [att(s, 2), att(s, 3)]).added
    s3 = rows(path, "SELECT embedding FROM templates t JOIN people p ON p.id = t.person_id WHERE name = 's3'")
    return folder, path, [r[0] for r in s3]


def test_a_removed_persons_templates_survive_in_no_file_a_killed_process_left_beside_the_gallery(tmp_path, pipeline):
    pytest.importorskip("faiss")
    folder, path, s3 = _three_people(tmp_path, pipeline)
    killed = subprocess.run([sys.executable, "-c", _KILLED_WHILE_SAVING, str(path)], capture_output=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    assert _files_holding(folder, s3) and not (folder / "people.db.faiss").exists()  # a temporary file, left

    out = cli("people", "remove", "s3", "-g", path)
    assert out.returncode == 0, out.stderr
    assert _files_holding(folder, s3) == []  # the temporary copy of the index went with the person
    check_consistent(path)
    assert cli("identify", "-g", path, att(4, 1)).returncode == 0  # and the gallery searches as before


def _file_size_limit(n_bytes: int):
    """For `preexec_fn`: files of this process may not grow past `n_bytes` (RLIMIT_FSIZE): a full disk as one
    process sees it, without root or a small file system (Python ignores SIGXFSZ: a write fails with EFBIG)."""
    import resource

    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (n_bytes, n_bytes))


def test_a_full_disk_is_named_as_such_and_loses_nothing(tmp_path, pipeline):
    """Opening needs the WAL index (-shm, 32 KiB) beside the gallery: on a full disk that failed as "not a
    usable gallery file (disk I/O error)", the words of a damaged file, which has a user restore a backup over
    a sound gallery. A change that cannot be written is refused plainly, the person kept whole."""
    path = tmp_path / "people.db"
    with Gallery(path, pipeline, create=True) as g:
        for s in (3, 4):
            assert g.enroll(f"s{s}", [att(s, 2), att(s, 3)]).added
    before = rows(path, "SELECT name, (SELECT count(*) FROM templates t WHERE t.person_id = p.id) FROM people p")
    assert not Path(f"{path}-shm").exists()
    for limit, command, said in (
        (16 * 1024, ["people", "list"], "cannot open it: the disk is full"),
        (34 * 1024, ["people", "remove", "s3"], "change not saved: the disk is full"),
    ):
        out = subprocess.run(
            cli_command() + [*command, "-g", str(path)],
            capture_output=True,
            text=True,
            timeout=120,
            preexec_fn=_file_size_limit(limit),
        )
        assert out.returncode == 2 and said in out.stderr, out.stderr
        assert "Traceback" not in out.stderr and "not a usable" not in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
        check_consistent(path)
        assert (
            rows(path, "SELECT name, (SELECT count(*) FROM templates t WHERE t.person_id = p.id) FROM people p")
            == before
        )


def test_the_id_of_a_removed_person_or_template_is_never_given_again(store_spec):
    """What a search's hits or a re-embedding hold between two reads of the gallery is an id: given again to a
    newcomer, the removed person's face was taken for theirs (see test_gallery's re-embedding test)."""
    from gallery_support import MODEL_128, unit_vectors

    from siamface.gallery import NewTemplate, open_store

    def templates(seed):
        return [NewTemplate(v, source=f"{seed}-{i}.png") for i, v in enumerate(unit_vectors(2, seed=seed))]

    with open_store(store_spec, MODEL_128, create=True) as store:
        store.add_templates("a", templates(1))
        removed = store.add_templates("b", templates(2))  # the newest: the highest ids
        store.delete("b")
        added = store.add_templates("c", templates(3))
        assert added.person.id > removed.person.id
        assert min(added.template_ids) > max(removed.template_ids)
        store.delete("c")  # and again, after the ids kept were themselves removed
        again = store.add_templates("d", templates(4))
        assert again.person.id > added.person.id and min(again.template_ids) > max(added.template_ids)
    check_consistent(store_spec)


def test_an_export_cut_short_is_refused_not_imported_as_a_smaller_gallery(new_gallery, tmp_path, pipeline):
    """A copy or transfer of an export stopped at a line's end (the backup of a gallery, restored) imported the
    people it still held and said nothing of the others: the header counts them, and now the import does."""
    source = new_gallery("source")
    with Gallery(source, pipeline, create=True) as g:
        for s in (3, 4, 5):
            assert g.enroll(f"s{s}", [att(s, 2)]).added
    export = tmp_path / "people.jsonl"
    assert cli("gallery", "export", "-g", source, export).returncode == 0
    lines = export.read_text().splitlines(keepends=True)
    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(lines[:-1]))  # the last person's line never arrived
    target = new_gallery("target")
    out = cli("gallery", "import", "-g", target, cut)
    assert out.returncode == 2 and "3 people" in out.stderr and "holds 2 people" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and not gallery_exists(target)
    out = cli("gallery", "import", "-g", target, export, "--json")  # the whole file goes in
    assert out.returncode == 0 and json.loads(out.stdout)["new_people"] == 3, out.stdout


#: `people remove s3` in a process killed with SIGKILL at `point` of the removal: once its transaction committed
#: (before anything beside it was cleaned), or once the WAL was checkpointed.
_KILLED_WHILE_REMOVING = """
import os, signal, sys
from siamface.gallery import SQLiteStore, open_store

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

if sys.argv[2] == "committed":
    SQLiteStore._after_delete = die
else:
    flush = SQLiteStore._flush_wal
    SQLiteStore._flush_wal = lambda self: (flush(self), die())
with open_store(sys.argv[1]) as store:
    store.delete("s3")
"""


@pytest.mark.parametrize("point", ["committed", "checkpointed"])
def test_a_removal_killed_after_its_commit_leaves_no_copy_of_the_templates(tmp_path, pipeline, point):
    """The FAISS index beside the gallery holds every template; it was removed after the removal committed and
    the WAL was checkpointed (which takes a while on a large gallery): a process killed in between left the
    removed person's templates in it, for as long as no process loaded it again."""
    pytest.importorskip("faiss")
    from siamface.gallery import open_store
    from siamface.gallery.index import GalleryIndex

    folder, path, s3 = _three_people(tmp_path, pipeline)
    with open_store(path) as store:  # a server searched through FAISS, and saved the index beside the gallery
        index = GalleryIndex(store, approx_min=1)
        index.search(np.asarray([np.frombuffer(s3[0], "<f4")]))
        index.close()
    assert (folder / "people.db.faiss").exists() and _files_holding(folder, s3) == ["people.db", "people.db.faiss"]

    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_WHILE_REMOVING, str(path), point], capture_output=True, timeout=120
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    out = cli("people", "list", "-g", path)  # the next use of the gallery
    assert out.returncode == 0 and "s3" not in out.stdout and "s4" in out.stdout, out
    check_consistent(path)
    assert _files_holding(folder, s3) == []


#: The real command in a process killed with SIGKILL once its output is written whole, before the rename that
#: puts it in place (`siamface._files.atomic_file`).
_KILLED_BEFORE_THE_RENAME = """
import os, signal, sys
os.replace = lambda src, dst: os.kill(os.getpid(), signal.SIGKILL)
from siamface.cli import main
main(sys.argv[1:])
"""


def test_an_export_killed_before_its_rename_leaves_no_lasting_copy_of_the_gallery(tmp_path, pipeline):
    """The hidden temporary file of an export killed before its rename held every template for ever, after
    `people remove` and another export (and a FAISS index's, or a model's, took their size again each time).
    The next write of the same file removes one left for an hour (not one a writer is writing now)."""
    folder, path, s3 = _three_people(tmp_path, pipeline)
    out_dir = tmp_path / "exports"
    out_dir.mkdir()
    export = out_dir / "people.jsonl"
    command = ["gallery", "export", "-g", str(path), str(export)]
    killed = subprocess.run([sys.executable, "-c", _KILLED_BEFORE_THE_RENAME, *command], capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    [left] = list(out_dir.iterdir())
    assert left.name.startswith(".people.jsonl.") and not export.exists()
    exported = [base64.b64encode(t) for t in s3]  # s3's templates as an export writes them
    assert _files_holding(out_dir, exported) == [left.name]

    assert cli("people", "remove", "s3", "-g", path).returncode == 0
    assert cli(*command).returncode == 0
    assert left.exists()  # as far as anyone can tell, a writer at work: kept
    hour_ago = time.time() - 3700  # the clock moved on: nobody is writing it
    os.utime(left, (hour_ago, hour_ago))
    assert cli(*command).returncode == 0
    assert [p.name for p in out_dir.iterdir()] == ["people.jsonl"] and _files_holding(out_dir, exported) == []
    assert [json.loads(line)["name"] for line in export.read_text().splitlines()[1:]] == ["s4", "s5"]


def test_a_server_stopping_after_another_removed_someone_writes_no_index_holding_them(tmp_path, pipeline):
    """Two servers on one SQLite gallery, each with its FAISS index: one removes s3 (and the index file with
    them), the other, which had learnt of an enrollment since it last saved, stops before its next search and
    wrote its index at shutdown as it stood: s3's templates were back on disk beside the gallery."""
    pytest.importorskip("faiss")
    from siamface.gallery import NewTemplate, open_store
    from siamface.gallery.faiss_index import FaissIndex
    from siamface.gallery.index import GalleryIndex

    folder, path, s3 = _three_people(tmp_path, pipeline)
    probe = np.asarray([np.frombuffer(s3[0], "<f4")])
    with open_store(path) as remover, open_store(path) as store:
        index = GalleryIndex(store, approx_min=1)
        index.search(probe)  # built and saved
        remover.add_templates("s6", [NewTemplate(probe[0][::-1].copy(), "s6.png")])
        index.search(probe)  # caught up with the enrollment: not saved yet
        remover.delete("s3")
        assert _files_holding(folder, s3) == []
        index.close()  # the server stops
    saved, header, (ids, _) = FaissIndex.load(folder / "people.db.faiss")
    held = {bytes(row.astype("<f4").tobytes()) for row in saved.contents()[1]}
    assert len(ids) == len(held) == 5 and held.isdisjoint(s3)  # s4's, s5's and s6's templates, none of s3's
    # (a gallery this small trains FAISS's coarse quantizer on copies of its templates: each template is one of
    # its 16 centroids, s3's too; searches never return them. From 50,000 templates on, where the gallery
    # searches through FAISS, a centroid is the mean of about 40 sampled templates.)


def test_a_save_that_lands_after_a_removal_is_overwritten_when_the_server_stops(tmp_path, pipeline):
    """A server's background save that began before another process removed s3 lands after the removal deleted
    the index file (as a copy of the file made before stands for here): the server, stopping, wrote nothing more
    (it had nothing unsaved), and s3's templates stayed in the file."""
    pytest.importorskip("faiss")
    import shutil

    from siamface.gallery import open_store
    from siamface.gallery.faiss_index import FaissIndex
    from siamface.gallery.index import GalleryIndex

    folder, path, s3 = _three_people(tmp_path, pipeline)
    with open_store(path) as remover, open_store(path) as store:
        index = GalleryIndex(store, approx_min=1)
        index.search(np.asarray([np.frombuffer(s3[0], "<f4")]))  # built and saved: nothing unsaved
        index.close()
        shutil.copy(folder / "people.db.faiss", tmp_path / "before.faiss")
        remover.delete("s3")
        shutil.copy(tmp_path / "before.faiss", folder / "people.db.faiss")  # the late save lands
        index.close()  # the server stops
    saved, _, (ids, _) = FaissIndex.load(folder / "people.db.faiss")
    assert len(ids) == 4 and {row.astype("<f4").tobytes() for row in saved.contents()[1]}.isdisjoint(s3)
