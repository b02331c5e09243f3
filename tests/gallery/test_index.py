"""ExactIndex against a brute-force reference, and its lazy rebuild when the store changes elsewhere; the
FAISS index against exact search, following changes from the gallery's change log, kept beside the gallery,
and the exact fallback without faiss-cpu."""

from __future__ import annotations

import numpy as np
import pytest
from gallery_support import backend, new_gallery, unit_vectors  # noqa: F401

from siamface.gallery import ExactIndex, GalleryIndex, ModelBinding, NewTemplate, open_store, synthetic


@pytest.fixture()
def store_spec(new_gallery):
    return new_gallery()


@pytest.fixture()
def store(store_spec):
    with open_store(store_spec, ModelBinding("m", "1", 16), create=True) as s:
        yield s


def test_empty_index_finds_nobody(store):
    index = ExactIndex(store)
    assert len(index) == 0 and index.search(unit_vectors(2, 16)) == [[], []]


def test_search_matches_brute_force(store):
    rng = np.random.default_rng(5)
    vectors = unit_vectors(60, 16, seed=5)
    owners = rng.integers(0, 12, 60)
    for person in range(12):
        mine = vectors[owners == person]
        if len(mine):
            store.add_templates(f"p{person}", [NewTemplate(v) for v in mine])
    ids = {store.person(f"p{p}").id: p for p in range(12) if (owners == p).any()}
    queries = unit_vectors(7, 16, seed=9)
    index = ExactIndex(store)
    results = index.search(queries, k=4)
    for q, hits in zip(queries, results):
        best = {p: float((vectors[owners == p] @ q).max()) for p in set(owners.tolist())}
        expected = sorted(best.items(), key=lambda kv: -kv[1])[:4]
        assert [ids[h.person_id] for h in hits] == [p for p, _ in expected]
        assert np.allclose([h.similarity for h in hits], [s for _, s in expected], atol=1e-5)
        templates = {t.id: t for t in store.templates(embeddings=True)}
        for h in hits:  # the template named is the one that gave the score
            assert float(templates[h.template_id].embedding @ q) == pytest.approx(h.similarity, abs=1e-5)
    excluded = index.search(queries[:1], k=3, exclude=results[0][0].person_id)[0]
    assert results[0][0].person_id not in [h.person_id for h in excluded]


def test_index_follows_changes_made_through_another_store(store, store_spec):
    index = ExactIndex(store)
    v = unit_vectors(3, 16)
    store.add_templates("a", [NewTemplate(v[0])])
    assert index.search(v[1:2])[0][0].person_id == store.person("a").id
    with open_store(store_spec) as other:  # another connection, as another process would
        other.add_templates("b", [NewTemplate(v[1])])
    assert len(index) == 2 and index.n_people == 2
    hit = index.search(v[1:2])[0][0]
    assert hit.person_id == store.person("b").id and hit.similarity == pytest.approx(1.0, abs=1e-6)
    store.delete("b")
    assert len(index) == 1


def test_person_scores(store):
    v = unit_vectors(4, 16, seed=3)
    a = store.add_templates("a", [NewTemplate(x) for x in v[:2]]).person
    store.add_templates("b", [NewTemplate(x) for x in v[2:]])
    ids, scores = ExactIndex(store).person_scores(v[:1], a.id)
    assert len(ids) == 2 and scores.shape == (1, 2)
    assert scores[0, 0] == pytest.approx(1.0, abs=1e-6)


class _ArrayStore:
    """The two reads an index makes, over arrays (a store of 20k templates would take long to fill)."""

    def __init__(self, owners, matrix):
        self.owners, self.rows, self.gen = owners, matrix, 0

    def generation(self):
        return self.gen

    def matrix(self):
        return self.gen, np.arange(len(self.rows)) + 1000, self.owners.astype(np.int64) + 1, self.rows


def test_faiss_index_agrees_with_exact_search_on_20k_templates():
    pytest.importorskip("faiss", reason="the faiss extra is not installed (pip install -e '.[faiss]')")
    centres, owners, templates = synthetic.gallery(20_000, seed=3)
    store = _ArrayStore(owners, templates)
    exact = GalleryIndex(store, approx_min=None)
    approx = GalleryIndex(store, approx_min=10_000)
    assert approx.approximate and not exact.approximate and approx.kind.startswith("FAISS")
    who, queries = synthetic.probes(centres, 300, seed=4)
    e = exact.search(queries, k=3)
    a = approx.search(queries, k=3)
    recall = np.mean([x[0].person_id == y[0].person_id for x, y in zip(e, a)])
    assert recall >= 0.99
    assert np.mean([x[0].person_id == w + 1 for x, w in zip(e, who)]) == 1.0  # exact finds the truth
    for x, y in zip(e, a):  # same person: the same best template, the same score
        if x[0].person_id == y[0].person_id:
            assert (x[0].template_id, x[0].similarity) == pytest.approx((y[0].template_id, y[0].similarity))
        assert len(y) == 3 and len({h.person_id for h in y}) == 3
    forced = approx.search(queries[:1], k=3, exact=True)[0]
    assert [(h.person_id, h.template_id) for h in forced] == [(h.person_id, h.template_id) for h in e[0]]
    first = a[0][0].person_id
    assert first not in [h.person_id for h in approx.search(queries[:1], k=3, exclude=first)[0]]


def test_faiss_index_follows_changes_from_another_process_without_reloading_and_is_kept_beside(tmp_path, monkeypatch):
    pytest.importorskip("faiss", reason="the faiss extra is not installed (pip install -e '.[faiss]')")
    centres, owners, templates = synthetic.gallery(12_000, seed=5)
    path = tmp_path / "g.db"
    store = open_store(path, ModelBinding("m", "1", 128), create=True)
    store.add_people([(f"p{p}", {}, [NewTemplate(v) for v in templates[owners == p]]) for p in range(len(centres))])
    index = GalleryIndex(store, approx_min=10_000)
    assert index.approximate and len(index) == 12_000
    index.close()
    saved = tmp_path / "g.db.faiss"
    assert saved.stat().st_mode & 0o777 == 0o600

    def no_reload():
        raise AssertionError("the whole gallery was read again")

    monkeypatch.setattr(store, "matrix", no_reload)
    other = open_store(path)  # another writer (a process of its own would do the same)
    newcomer = synthetic.around(synthetic.gallery(1, seed=9)[0], np.random.default_rng(1))
    added = other.add_templates("late", [NewTemplate(newcomer[0])])
    hit = index.search(newcomer)[0][0]  # the next search: the change log, not a reload
    assert hit.person_id == added.person.id and hit.similarity == pytest.approx(1.0, abs=1e-5)
    index.close()
    # a new process loads the saved index (and the log since): it reads the templates once to check the file
    # against them (a cache, never the truth), and trains no new index
    fresh = open_store(path)
    reads = []
    original = fresh.matrix
    monkeypatch.setattr(fresh, "matrix", lambda: reads.append(1) or original())
    monkeypatch.setattr(GalleryIndex, "_build", lambda *a: (_ for _ in ()).throw(AssertionError("rebuilt")))
    again = GalleryIndex(fresh, approx_min=10_000)
    assert again.search(newcomer)[0][0].person_id == added.person.id and reads == [1]
    monkeypatch.undo()
    # removing a person removes the saved file (it holds their template), the index follows at once and
    # writes a new one without it
    blob = newcomer[0].astype("<f4").tobytes()
    assert blob in saved.read_bytes()
    other.delete("late")
    assert not saved.exists()
    assert again.search(newcomer)[0][0].person_id != added.person.id
    again.close()
    assert saved.exists() and blob not in saved.read_bytes()


def test_without_faiss_a_large_gallery_is_searched_exactly_and_the_log_says_why(monkeypatch, caplog):
    from siamface.gallery import faiss_index
    from siamface.gallery import index as module

    monkeypatch.setattr(faiss_index, "available", lambda: False)
    monkeypatch.setattr(module, "_warned", set())
    centres, owners, templates = synthetic.gallery(12_000, seed=5)
    index = GalleryIndex(_ArrayStore(owners, templates), approx_min=10_000)
    who, queries = synthetic.probes(centres, 5, seed=4)
    with caplog.at_level("WARNING"):
        found = index.search(queries, k=1)
    assert not index.approximate and index.kind == "exact"
    assert [h[0].person_id for h in found] == list(who + 1)
    assert "faiss-cpu is not installed: 1:N search over 12000 templates is exact" in caplog.text
    assert "pip install 'siamface[faiss]'" in caplog.text


def test_a_saved_faiss_index_the_change_log_no_longer_reaches_is_rebuilt(tmp_path):
    pytest.importorskip("faiss", reason="the faiss extra is not installed (pip install -e '.[faiss]')")
    import sqlite3

    centres, owners, templates = synthetic.gallery(10_000, seed=6)
    path = tmp_path / "g.db"
    with open_store(path, ModelBinding("m", "1", 128), create=True) as store:
        store.add_people([(f"p{p}", {}, [NewTemplate(v) for v in templates[owners == p]]) for p in range(len(centres))])
        GalleryIndex(store, approx_min=10_000).close()
        newcomer = synthetic.around(synthetic.gallery(1, seed=9)[0], np.random.default_rng(1))
        added = store.add_templates("late", [NewTemplate(newcomer[0])])
    db = sqlite3.connect(path)  # the log pruned past the saved index (as after 200k changes)
    db.execute("DELETE FROM template_changes WHERE seq < (SELECT max(seq) FROM template_changes)")
    db.commit()
    db.close()
    with open_store(path) as store:
        reads = []
        original = store.matrix
        store.matrix = lambda: reads.append(1) or original()
        index = GalleryIndex(store, approx_min=10_000)
        assert index.search(newcomer)[0][0].person_id == added.person.id
        assert reads == [1] and index.approximate  # rebuilt from the gallery, once
