"""`siamface index` on a real local Ray cluster (a head and a worker node, each its own raylet and worker
processes): a worker node killed in the middle of a run, and a run resumed after a crash, leave every image
in the index exactly once. Kept light for 2 cores: one CPU per node, 100 MB object stores, no dashboard."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from conftest import ATT, run_cli

ray = pytest.importorskip("ray", reason="the cluster extra is not installed (pip install -e '.[cluster]')")
pq = pytest.importorskip("pyarrow.parquet", reason="the cluster extra is not installed (pip install -e '.[cluster]')")

SUBJECTS = [ATT / f"s{s}" for s in range(3, 11)]  # 32 faces; s11 and s33 are left out
NODE = {"num_cpus": 1, "object_store_memory": 100 * 1024 * 1024}


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={**NODE, "include_dashboard": False})
    c.worker = c.add_node(**NODE)
    try:
        yield c
    finally:
        if ray.is_initialized():
            ray.shutdown()
        c.shutdown()


def rows(folder: Path) -> list[tuple[str, int]]:
    out = []
    for part in sorted(folder.glob("part-*.parquet")):
        t = pq.read_table(part, columns=["path", "face"]).to_pydict()
        out += list(zip(t["path"], t["face"]))
    return out


def images() -> set[str]:
    return {str(p) for s in SUBJECTS for p in s.iterdir()}


def test_a_worker_killed_mid_run_leaves_every_image_exactly_once(cluster, tmp_path):
    out = tmp_path / "index"
    killed = threading.Event()
    written_before_the_kill = []

    def kill_the_worker_once_a_block_is_written():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list(out.glob("part-*.parquet")):
            time.sleep(0.05)
        written_before_the_kill.append(len(list(out.glob("part-*.parquet"))))
        cluster.remove_node(cluster.worker, allow_graceful=False)  # its raylet and workers are killed
        killed.set()

    killer = threading.Thread(target=kill_the_worker_once_a_block_is_written, daemon=True)
    killer.start()
    result = run_cli("index", *SUBJECTS, "--out", out, "--address", cluster.address, "--batch", "2", "--json")
    killer.join(30)
    assert result.returncode == 0, result.stderr
    assert killed.is_set() and written_before_the_kill[0] < 16  # 16 blocks of 2: killed mid-run
    # Ray's driver prints the lost raylet's last log lines on stdout (not siamface's doing): the report is
    # the JSON object that ends the output
    report = json.loads(
        result.stdout[result.stdout.rindex("\n{\n") + 1 :] if "\n{\n" in result.stdout else result.stdout
    )
    assert report["images"] == report["indexed"] == len(images()) == 32
    found = rows(out)
    assert len(found) == len(set(found))  # no row twice
    assert {p for p, _ in found} == images()  # no image missing
    assert all(face == 0 for _, face in found)  # one face each: no image embedded as two rows


def test_a_crashed_run_is_finished_by_running_it_again_with_no_image_twice(cluster, tmp_path):
    out = tmp_path / "index"
    first = run_cli("index", *SUBJECTS[:2], "--out", out, "--address", cluster.address, "--batch", "2", "--json")
    assert first.returncode == 0, first.stderr
    parts = sorted(out.glob("part-*.parquet"))
    assert len(parts) == 4
    lost = set(pq.read_table(parts[0], columns=["path"]).column("path").to_pylist())
    parts[0].unlink()  # the crash came before this block was written...
    (out / f".{parts[1].name}.999.tmp").write_bytes(b"half a part")  # ...and while this one was
    again = run_cli("index", *SUBJECTS[:3], "--out", out, "--address", cluster.address, "--batch", "2", "--json")
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["already_indexed"] == 8 - len(lost) and report["indexed"] == 4 + len(lost)
    found = rows(out)
    assert len(found) == len(set(found)) == 12
    assert not list(out.glob(".*.tmp"))

    from siamface.library.index import read_index

    index = read_index(out)
    assert len(index["paths"]) == 12 and index["embeddings"].shape[0] == 12
    from siamface.pipeline import DEFAULT_MODEL

    another = "sface" if DEFAULT_MODEL != "sface" else "dlib-resnet"  # an index holds one model's embeddings
    other = run_cli("index", *SUBJECTS[:1], "--out", out, "--model", another, "--address", cluster.address)
    assert other.returncode == 2 and "holds embeddings of" in other.stderr


def test_cluster_and_find_read_the_faces_from_an_index_without_embedding_again(cluster, tmp_path, monkeypatch):
    out = tmp_path / "index"
    made = run_cli("index", *SUBJECTS[:3], "--out", out, "--address", cluster.address, "--batch", "4", "--json")
    assert made.returncode == 0, made.stderr
    gallery = tmp_path / "people.db"
    enrolled = run_cli("enroll", "-g", gallery, "s4", ATT / "s4" / "1.pgm", ATT / "s4" / "2.pgm")
    assert enrolled.returncode == 0, enrolled.stderr

    from siamface.pipeline import Pipeline

    def no_embedding(*args, **kwargs):
        raise AssertionError("a face was embedded again")

    monkeypatch.setattr(Pipeline, "embed_many", no_embedding)
    grouped = run_cli("cluster", *SUBJECTS[:3], "--index", out, "--no-cache", "--json")
    assert grouped.returncode == 0, grouped.stderr
    payload = json.loads(grouped.stdout)
    owners = [{Path(f["file"]).parent.name for f in c["faces"]} for c in payload["clusters"]]
    assert sorted(map(sorted, owners)) == [["s3"], ["s4"], ["s5"]]  # one person per group, every face read
    assert sum(len(c["faces"]) for c in payload["clusters"]) + len(payload["unclustered"]) == 12
    only = run_cli("cluster", SUBJECTS[1], "--index", out, "--no-cache", "--json")  # PATH filters the index
    assert {Path(f["file"]).parent.name for c in json.loads(only.stdout)["clusters"] for f in c["faces"]} == {"s4"}
    found = run_cli("find", "-g", gallery, "s4", *SUBJECTS[:3], "--index", out, "--no-cache", "--json")
    assert found.returncode == 0, found.stderr
    assert {Path(p).parent.name for p in found.stdout.split('"') if p.endswith(".pgm")} == {"s4"}
    beyond = run_cli("find", "-g", gallery, "s4", ATT, "--index", out, "--no-cache", "--json")  # s6... not indexed
    assert beyond.returncode == 2 and "not in the index" in beyond.stderr, beyond.stderr


def test_a_pipe_or_a_device_among_the_images_is_an_unreadable_row_not_a_hung_worker(tmp_path):
    # An embedding worker read each image whole before asking what it was: a FIFO named like a photo (anyone who
    # may write into the archive can leave one) held its worker for ever, a link to /dev/zero grew it without
    # end. Each is a row marked unreadable; the others are embedded. The block of work a Ray actor runs, in a
    # process of its own (a hang is its timeout; its memory is bounded, for /dev/zero).
    import os
    import subprocess
    import sys

    from conftest import att

    from siamface.pipeline import DEFAULT_MODEL

    os.mkfifo(tmp_path / "dropped.jpg")
    (tmp_path / "endless.png").symlink_to("/dev/zero")
    paths = [str(tmp_path / "dropped.jpg"), str(tmp_path / "endless.png"), str(att(5, 1))]
    script = (
        "import json, resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_DATA, (4 << 30, 4 << 30))\n"
        "from siamface.library.index import embed_block\n"
        "options = {'detector': 'retinaface', 'model': sys.argv[2], 'min_face': 20, 'upsample': None, 'device': 'cpu'}\n"
        "rows = embed_block(json.loads(sys.argv[1]), options)\n"
        "print(json.dumps({'face': rows['face'], 'error': rows['error'], 'path': rows['path']}))\n"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", script, json.dumps(paths), DEFAULT_MODEL], capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the block still running after 60 s: its worker blocked on the FIFO")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    by_path = dict(zip(rows["path"], zip(rows["face"], rows["error"])))
    for bad in paths[:2]:
        face, error = by_path[bad]
        assert face == -2 and "not a regular file" in error, by_path
    assert by_path[paths[2]] == (0, None)


@pytest.mark.parametrize("how", ["part 0666", "another user's part", "folder 0777"])
def test_an_index_others_may_change_is_not_read(tmp_path, how):
    # cluster --index and find --index took every row of every part-*.parquet in the folder as found: a part
    # another user put there (a shared cluster file system), or changed, said which faces the photos hold (any
    # embedding under any path: find reported a stranger's photos as s4's). An index that others may change is
    # refused, as a gallery or a FAISS file is.
    import os

    import pyarrow
    from conftest import att

    from siamface.library.index import ParquetIndex, _arrow_columns, embed_block
    from siamface.pipeline import DEFAULT_MODEL

    if how == "another user's part" and (os.name == "nt" or os.getuid() != 0):
        pytest.skip("giving a file to another user needs root")
    gallery = tmp_path / "people.db"
    assert run_cli("enroll", "--gallery", gallery, "--min-size", "40", "s4", att(4, 2)).returncode == 0
    photos = tmp_path / "photos"
    photos.mkdir()
    for s in (4, 5):
        (photos / f"s{s}.pgm").write_bytes(att(s, 1).read_bytes())
    out = tmp_path / "index"
    options = {"detector": "retinaface", "model": DEFAULT_MODEL, "min_face": 20, "upsample": None, "device": "cpu"}
    rows = embed_block(sorted(str(p) for p in photos.iterdir()), options)
    sink = ParquetIndex(out)
    sink.bind(rows["model"][0])
    sink.write(pyarrow.table(_arrow_columns(rows)))
    args = ("find", "-g", gallery, "s4", photos, "--index", out, "--no-cache", "--json")
    assert run_cli(*args).returncode == 0  # the owner's own index is read
    (part,) = out.glob("part-*.parquet")
    if how == "part 0666":
        part.chmod(0o666)
    elif how == "another user's part":
        os.chown(part, 4321, 4321)
    else:
        out.chmod(0o777)
    refused = run_cli(*args)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, (refused.stdout, refused.stderr)
    assert "other users" in refused.stderr or "another user" in refused.stderr, refused.stderr


def test_a_part_is_never_written_through_a_link_planted_at_its_temporary_name(tmp_path):
    # A part was written to .NAME.PID.tmp in the index folder (a shared file system on a cluster), a name anyone
    # could predict (NAME: a digest of the block's paths): a link planted there made the run overwrite the link's
    # target with Parquet bytes. Parts are written under a random name made O_EXCL, then renamed.
    import hashlib
    import os

    import pyarrow

    from siamface.library.index import ParquetIndex, _arrow_columns

    rows = {"path": ["a.jpg"], "face": [-1], "image_sha256": [""], "box": [None], "score": [None]}
    rows |= {"embedding": [None], "error": [None], "model": ["m"]}
    name = "part-" + hashlib.sha256(b"a.jpg").hexdigest()[:24] + ".parquet"
    out, victim = tmp_path / "index", tmp_path / "victims-file"
    out.mkdir()
    victim.write_bytes(b"keep me")
    (out / f".{name}.{os.getpid()}.tmp").symlink_to(victim)
    sink = ParquetIndex(out)
    sink.write(pyarrow.table(_arrow_columns(rows)))
    sink.close()
    assert victim.read_bytes() == b"keep me"
    assert pq.read_table(out / name).column("path").to_pylist() == ["a.jpg"]


def test_an_index_is_not_made_in_a_folder_others_may_change(tmp_path):
    # `siamface index --out DIR` wrote into a folder anyone may write: the index it made there would be refused
    # when read (after the whole run), and the model's name was written through a link planted at
    # DIR/_siamface_index.json, creating or overwriting the file it pointed to. Refused before any work now.
    import os

    from conftest import att

    from siamface.library.index import ParquetIndex

    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "s4.pgm").write_bytes(att(4, 1).read_bytes())
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    victim = tmp_path / "victims-file"
    (shared / "_siamface_index.json").symlink_to(victim)
    out = run_cli("index", photos, "--out", shared, "--workers", "1", "--json")
    assert out.returncode == 2 and "may be written by other users" in out.stderr, (out.stdout, out.stderr)
    assert not victim.exists() and not list(shared.glob("part-*"))
    mine = tmp_path / "mine"
    ParquetIndex(mine).bind("m")  # a folder of its own: made 0700, bound
    assert os.stat(mine).st_mode & 0o777 == 0o700 and os.stat(mine / "_siamface_index.json").st_mode & 0o777 == 0o600
