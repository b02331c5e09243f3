"""ExactIndex against a brute-force reference, and its lazy rebuild when the store changes elsewhere."""

from __future__ import annotations

import numpy as np
import pytest

from siamface.gallery import ExactIndex, ModelBinding, NewTemplate, SQLiteStore

from gallery_support import unit_vectors


@pytest.fixture()
def store(tmp_path):
    with SQLiteStore(tmp_path / "g.db", ModelBinding("m", "1", 16), create=True) as s:
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


def test_index_follows_changes_made_through_another_store(store, tmp_path):
    index = ExactIndex(store)
    v = unit_vectors(3, 16)
    store.add_templates("a", [NewTemplate(v[0])])
    assert index.search(v[1:2])[0][0].person_id == store.person("a").id
    with SQLiteStore(tmp_path / "g.db") as other:    # another connection, as another process would
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
