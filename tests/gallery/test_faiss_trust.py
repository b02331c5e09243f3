"""The FAISS index beside a gallery (``<gallery>.faiss``) is a cache, never the truth: a file whose person ids
were swapped, whose vectors were overwritten or whose header claims 1e12 rows is rebuilt from the gallery
(with a warning), and `identify` names the right person; never a crash or a MemoryError."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import att, run_cli

pytest.importorskip("faiss", reason="the faiss extra is not installed (pip install -e '.[faiss]')")
pytestmark = pytest.mark.slow  # a gallery of 50,000 templates of the default model (about 90 s on 2 cores)

from siamface.gallery import APPROX_MIN_TEMPLATES, NewTemplate, open_store  # noqa: E402
from siamface.gallery.synthetic import gallery as synthetic_gallery  # noqa: E402


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """s3 and s4 enrolled through the CLI among enough synthetic strangers for FAISS, with its file saved."""
    path = tmp_path_factory.mktemp("faiss") / "people.db"
    for subject in (3, 4):
        out = run_cli("enroll", "--gallery", path, f"s{subject}", att(subject, 2), att(subject, 3))
        assert out.returncode == 0, out.stderr
    with open_store(path) as store:
        d = store.model.embedding_size
        _, owners, rows = synthetic_gallery(APPROX_MIN_TEMPLATES, d=d, seed=1)
        store.add_people([(f"x{p}", {}, [NewTemplate(v) for v in rows[owners == p]]) for p in np.unique(owners)])
    assert _identify(path)[0] == "s3"
    saved = path.with_name(path.name + ".faiss")
    assert saved.exists()
    return path, saved.read_bytes()


def _identify(path):
    out = run_cli("identify", "--gallery", path, att(3, 1), "--json")
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    face = json.loads(out.stdout)["results"][0]["faces"][0]
    return face["person"], out.stderr


def _parts(data: bytes):
    end = data.index(b"\n") + 1
    header = json.loads(data[:end])
    n = header["arrays"][0]
    ids = np.frombuffer(data[end : end + 8 * n], np.int64)
    people = np.frombuffer(data[end + 8 * n : end + 16 * n], np.int64)
    return header, end, ids, people


def _s3_and_s4(path):
    with open_store(path) as store:
        return store.person("s3").id, store.person("s4").id


def test_person_ids_swapped_in_the_file_are_seen_and_rebuilt(big):
    path, data = big
    s3, s4 = _s3_and_s4(path)
    header, end, ids, people = _parts(data)
    swapped = people.copy()
    swapped[people == s3], swapped[people == s4] = s4, s3
    n = len(ids)
    path.with_name(path.name + ".faiss").write_bytes(data[: end + 8 * n] + swapped.tobytes() + data[end + 16 * n :])
    named, stderr = _identify(path)
    assert named == "s3" and "does not match the gallery" in stderr  # the swapped file named s4


def test_vectors_overwritten_with_ff_bytes_are_seen_and_rebuilt(big):
    path, data = big
    with open_store(path) as store:
        blobs = [t.embedding.astype("<f4").tobytes() for t in store.templates("s3", embeddings=True)]
    damaged = data
    for blob in blobs:
        at = damaged.index(blob)
        damaged = damaged[:at] + b"\xff" * len(blob) + damaged[at + len(blob) :]
    path.with_name(path.name + ".faiss").write_bytes(damaged)
    named, stderr = _identify(path)
    assert named == "s3" and "does not match the gallery" in stderr


def test_a_header_claiming_1e12_rows_is_a_rebuild_not_a_memory_error(big):
    path, data = big
    header, end, _, _ = _parts(data)
    header["arrays"] = [10**12, 10**12]
    path.with_name(path.name + ".faiss").write_bytes(json.dumps(header).encode() + b"\n" + data[end:])
    assert _identify(path)[0] == "s3"


def test_serve_starts_on_a_damaged_index_file_and_names_the_right_person(big):
    pytest.importorskip("fastapi", reason="the service extra is not installed")
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent.parent / "service"))
    from service_support import Server

    path, data = big
    header, end, _, _ = _parts(data)
    header["arrays"] = [10**12, 10**12]  # killed serve at start with MemoryError
    path.with_name(path.name + ".faiss").write_bytes(json.dumps(header).encode() + b"\n" + data[end:])
    server = Server(path)
    try:
        answer = server.request("POST", "/v1/identify", files=[("image", "probe.pgm", att(3, 1).read_bytes())])
        assert answer.status == 200 and answer.body["faces"][0]["person"] == "s3", answer.body
    finally:
        server.stop()


def test_a_file_other_users_may_write_is_not_read(big):
    # The attack run: the file's bytes go to FAISS's own deserialiser before they are checked against the
    # gallery; one other users may write (or plant beside a gallery in a shared folder) is not read at all.
    path, data = big
    saved = path.with_name(path.name + ".faiss")
    saved.write_bytes(data)
    saved.chmod(0o666)
    named, stderr = _identify(path)
    assert named == "s3" and "not loaded" in stderr and "may be written by other users" in stderr, stderr
