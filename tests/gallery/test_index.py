"""ExactIndex against a brute-force reference, and its lazy rebuild when the store changes elsewhere."""

from __future__ import annotations

import numpy as np
import pytest

from siamface.gallery import ExactIndex, GalleryIndex, ModelBinding, NewTemplate, open_store, synthetic

from gallery_support import backend, new_gallery, unit_vectors  # noqa: F401


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
    with open_store(store_spec) as other:    # another connection, as another process would
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


def test_ivf_index_agrees_with_exact_search_on_20k_templates():
    centres, owners, templates = synthetic.gallery(20_000, seed=3)
    store = _ArrayStore(owners, templates)
    exact = GalleryIndex(store, approx_min=None)
    approx = GalleryIndex(store, approx_min=10_000)
    assert approx.approximate and not exact.approximate
    who, queries = synthetic.probes(centres, 300, seed=4)
    e = exact.search(queries, k=3)
    a = approx.search(queries, k=3)
    recall = np.mean([x[0].person_id == y[0].person_id for x, y in zip(e, a)])
    assert recall >= 0.99
    assert np.mean([x[0].person_id == w + 1 for x, w in zip(e, who)]) == 1.0      # exact finds the truth
    for x, y in zip(e, a):                     # same person: the same best template, the same score
        if x[0].person_id == y[0].person_id:
            assert (x[0].template_id, x[0].similarity) == pytest.approx((y[0].template_id, y[0].similarity))
        assert len(y) == 3 and len({h.person_id for h in y}) == 3
    forced = approx.search(queries[:1], k=3, exact=True)[0]
    assert [(h.person_id, h.template_id) for h in forced] == [(h.person_id, h.template_id) for h in e[0]]
    first = a[0][0].person_id
    assert first not in [h.person_id for h in approx.search(queries[:1], k=3, exclude=first)[0]]


def test_ivf_index_is_rebuilt_when_the_gallery_changes():
    centres, owners, templates = synthetic.gallery(12_000, seed=5)
    store = _ArrayStore(owners, templates)
    index = GalleryIndex(store, approx_min=10_000)
    before = index._current().ivf
    newcomer = synthetic.around(centres[:1] * 0 + synthetic.gallery(1, seed=9)[0], np.random.default_rng(1))
    store.owners = np.r_[owners, owners.max() + 1]
    store.rows = np.vstack([templates, newcomer])
    store.gen += 1
    hit = index.search(newcomer)[0][0]
    after = index._current().ivf
    assert after is not before and np.array_equal(after.centroids, before.centroids)   # quantizer kept
    assert hit.person_id == owners.max() + 2 and hit.similarity == pytest.approx(1.0, abs=1e-5)
    store.owners, store.rows, store.gen = owners[:5000], templates[:5000], store.gen + 1
    assert not index.approximate and len(index) == 5000                 # small again: exact
