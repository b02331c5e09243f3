"""`siamface index` into PostgreSQL/pgvector (the gallery's database): a block written twice adds no row,
the images already there are skipped by a re-run, and one model's index refuses another's rows."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import att
from gallery_support import postgres_gallery  # noqa: F401

pa = pytest.importorskip("pyarrow", reason="the cluster extra is not installed (pip install -e '.[cluster]')")

from siamface.errors import ModelMismatchError  # noqa: E402
from siamface.library.index import TABLE, _arrow_columns, embed_block, open_index, run_index  # noqa: E402
from siamface.pipeline import DEFAULT_MODEL  # noqa: E402

OPTIONS = {"detector": "retinaface", "model": DEFAULT_MODEL, "min_face": 20, "upsample": None, "device": "cpu"}


def test_blocks_written_twice_add_nothing_and_a_rerun_embeds_nothing(postgres_gallery, tmp_path):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8 not an image")
    paths = [str(att(5, 1)), str(att(6, 1)), str(corrupt)]
    rows = embed_block(paths, OPTIONS)
    sink = open_index(postgres_gallery)
    sink.bind(rows["model"][0])
    table = pa.table(_arrow_columns(rows))
    sink.write(table)
    sink.write(table)  # the same block again, as after a crash between the commit and the driver's count
    stored = sink.conn.execute(f"SELECT path, face, error, embedding FROM {TABLE} ORDER BY path, face").fetchall()
    assert [(p, f) for p, f, _, _ in stored] == sorted([(paths[0], 0), (paths[1], 0), (paths[2], -2)])
    assert sink.done() == set(paths)
    by_path = {p: e for p, _, _, e in stored}
    embedded = dict(zip(rows["path"], rows["embedding"]))
    np.testing.assert_array_equal(by_path[paths[0]].to_numpy(), embedded[paths[0]])
    assert by_path[str(corrupt)] is None

    stats = run_index(paths, sink, OPTIONS)  # everything is there: Ray is not even started
    assert (stats.skipped, stats.done) == (3, 0)

    other = open_index(postgres_gallery)
    with pytest.raises(ModelMismatchError):
        other.bind("another-model")
    other.close()
