"""Group unit embeddings by person without a gallery: four methods over the graph of pairs whose cosine
similarity reaches a threshold (the linking threshold: `siamface.library.groups.cluster_threshold`).

    labels = cluster(embeddings, threshold, method="average")   # (n,) int: group per face, largest first
    labels = cluster(embeddings, threshold)   # the default, whispers+mean

==============  ======================================================================================
method          rule
==============  ======================================================================================
whispers+mean   Chinese whispers, then one look at the faces it left alone: a lone face joins the group
                (of two faces or more) whose mean template (the normalised mean of its faces) it is most
                similar to, when that similarity reaches the same threshold (`join` overrides it). The
                mean averages out the pose and light of single photos: a face too far from each photo of
                its person can still reach their mean; no new parameter is tuned
components      single linkage: the connected components of the threshold graph (the naive baseline:
                one look-alike pair joins two people)
whispers        Chinese whispers (Biemann 2006, dlib's ``chinese_whispers``) over the threshold graph,
                weighted by similarity: each face takes the label its neighbours carry the most weight of,
                in a seeded random order, for `iterations` rounds (deterministic for a seed)
average         agglomerative average linkage cut at the threshold: two groups merge while the mean
                similarity of all their cross pairs reaches it (exact; run inside each connected
                component, since no pair of groups from two components can reach it)
==============  ======================================================================================

Labels are renumbered so that group 0 is the largest (ties: the group whose first face comes first); a
group of one face is a face that belongs to no group ("unclustered"). Neighbours come from FAISS where it is
installed (range search; exact up to `EXACT_LIMIT` faces, an inverted-file index past it), else from NumPy
in row blocks (exact).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

log = logging.getLogger(__name__)

METHODS = ("whispers+mean", "whispers", "average", "components")
#: Measured on celeba_ids (benchmarks/cluster.py, docs "Photo libraries"): at the BCubed precision wanted
#: (>= 0.98), Chinese whispers keeps the most recall of the one-pass methods; joining the faces it leaves
#: alone to a group's mean template at the same threshold adds recall and, on the fitting identities, costs
#: no precision.
DEFAULT_METHOD = "whispers+mean"
#: Faces up to which FAISS searches exactly; past it, an inverted-file index (see `_faiss_index`). Measured by
#: benchmarks/cluster_nprobe.py on synthetic templates as loose as real ones (docs "Photo libraries"): at 60,000
#: faces the fewest lists that lose under 0.5 % of the exact graph's edges (sface-like 256 of 979, sface+dlib-like
#: 128) cost more than the exact search; at 200,000 (sface-like) 64 of 1,788 lists lost 10.6 % and cost more too.
EXACT_LIMIT = 200_000
#: Lists searched past `EXACT_LIMIT` (the most measured at 200,000 faces: 16 lost 30 % of the edges, 64 10.6 %).
NPROBE = 64
#: Rows of the similarity matrix computed at once by the NumPy neighbour search (memory: BLOCK * n floats).
BLOCK = 1024


@dataclass(frozen=True)
class Graph:
    """The threshold graph: undirected edges ``i < j`` whose similarity reaches the threshold."""

    n: int
    i: np.ndarray
    j: np.ndarray
    similarity: np.ndarray


def _unit(embeddings: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(np.asarray(embeddings, np.float32).reshape(len(embeddings), -1))
    if not np.isfinite(x).all():
        raise ConfigError("embeddings to cluster hold NaN or infinite values")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def threshold_graph(
    embeddings: np.ndarray, threshold: float, use_faiss: bool | None = None, *, nprobe: int = NPROBE
) -> Graph:
    """Every pair of faces whose cosine similarity is at least `threshold`. `use_faiss`: None uses FAISS
    when it is installed; `nprobe`: the lists its inverted-file index searches past `EXACT_LIMIT` faces."""
    x = _unit(embeddings)
    n = len(x)
    if n < 2:
        return Graph(n, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    faiss = _faiss() if use_faiss in (None, True) else None
    if use_faiss and faiss is None:
        raise ConfigError("FAISS is not installed: pip install 'siamface[faiss]'")
    if faiss is not None:
        rows, cols, sims = both_ways(*range_search(_faiss_index(faiss, x, nprobe), x, threshold))
    else:
        parts_r, parts_c, parts_s = [], [], []
        for start in range(0, n, BLOCK):
            block = x[start : start + BLOCK] @ x[start:].T  # only the columns from `start` on: i <= j
            r, c = np.nonzero(block >= threshold)
            parts_r.append(r + start)
            parts_c.append(c + start)
            parts_s.append(block[r, c])
        rows, cols, sims = np.concatenate(parts_r), np.concatenate(parts_c), np.concatenate(parts_s)
    keep = rows < cols
    return Graph(n, rows[keep], cols[keep], sims[keep].astype(np.float32))


def range_search(index, x: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, cols, similarities): each face of `x` against `index`, every result at `threshold` or more."""
    lims, sims, ids = index.range_search(x, float(threshold))
    rows = np.repeat(np.arange(len(x), dtype=np.int64), np.diff(lims.astype(np.int64)))
    return rows, ids.astype(np.int64), sims.astype(np.float32)


def both_ways(rows: np.ndarray, cols: np.ndarray, sims: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pairs `rows` - `cols` as ``i < j`` once each, whichever of the two faces' searches found them: an
    inverted-file search finds j from i only when j's list is among those searched for i, so a pair found
    from one side alone is an edge too (keeping ``rows < cols`` lost it)."""
    i, j = np.minimum(rows, cols), np.maximum(rows, cols)
    keep = i < j
    i, j, sims = i[keep], j[keep], sims[keep]
    _, first = np.unique(i * (int(j.max(initial=0)) + 1) + j, return_index=True)
    return i[first], j[first], sims[first]


def _faiss_index(faiss, x: np.ndarray, nprobe: int = NPROBE):
    """An exact inner-product index up to `EXACT_LIMIT` faces; past it an inverted-file index (`nlist` about
    4 sqrt(n) lists, `nprobe` of them searched), whose range search may miss a few edges."""
    n, d = x.shape
    if n <= EXACT_LIMIT:
        index = faiss.IndexFlatIP(d)
    else:
        nlist = int(4 * np.sqrt(n))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        sample = np.random.default_rng(0).choice(n, size=min(n, 64 * nlist), replace=False)
        index.train(x[np.sort(sample)])
        index.nprobe = int(nprobe)
    index.add(x)
    return index


def _faiss():
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def components(graph: Graph) -> np.ndarray:
    """Connected components of `graph` (min-label propagation with pointer jumping): a label per node."""
    labels = np.arange(graph.n, dtype=np.int64)
    if not len(graph.i):
        return labels
    while True:
        before = labels.copy()
        low = np.minimum(labels[graph.i], labels[graph.j])
        np.minimum.at(labels, graph.i, low)
        np.minimum.at(labels, graph.j, low)
        while True:  # pointer jumping: every node points at its label's label
            jumped = labels[labels]
            if np.array_equal(jumped, labels):
                break
            labels = jumped
        if np.array_equal(labels, before):
            return labels


def chinese_whispers(graph: Graph, iterations: int = 20, seed: int = 0) -> np.ndarray:
    """Chinese whispers over `graph`, edges weighted by similarity: a label per node."""
    n = graph.n
    labels = np.arange(n, dtype=np.int64)
    if not len(graph.i):
        return labels
    src = np.concatenate([graph.i, graph.j])
    dst = np.concatenate([graph.j, graph.i])
    weight = np.concatenate([graph.similarity, graph.similarity]).astype(np.float64)
    order = np.argsort(src, kind="stable")
    src, dst, weight = src[order], dst[order], weight[order]
    starts = np.searchsorted(src, np.arange(n + 1))
    has_edges = np.flatnonzero(np.diff(starts) > 0)
    rng = np.random.default_rng(seed)
    for _ in range(iterations):
        changed = 0
        for node in rng.permutation(has_edges):
            a, b = starts[node], starts[node + 1]
            theirs = labels[dst[a:b]]
            unique, inverse = np.unique(theirs, return_inverse=True)
            totals = np.bincount(inverse, weights=weight[a:b])
            best = int(unique[int(np.argmax(totals))])  # ties: the smallest label (argmax takes the first)
            if best != labels[node]:
                labels[node] = best
                changed += 1
        if not changed:
            break
    return labels


def average_linkage(embeddings: np.ndarray, threshold: float, graph: Graph | None = None) -> np.ndarray:
    """Average-linkage groups cut at `threshold`: a label per face. Exact: run by the nearest-neighbour
    chain inside each connected component of the threshold graph (a pair of groups can only reach the
    threshold on average if one of their cross pairs reaches it)."""
    x = _unit(embeddings)
    graph = graph if graph is not None else threshold_graph(x, threshold)
    comp = components(graph)
    labels = np.arange(graph.n, dtype=np.int64)
    order = np.argsort(comp, kind="stable")
    bounds = np.flatnonzero(np.diff(comp[order])) + 1
    for members in np.split(order, bounds):
        if len(members) < 2:
            continue
        groups = _nn_chain(x[members], threshold)
        for g in np.unique(groups):
            chosen = members[groups == g]
            labels[chosen] = chosen.min()
    return labels


def _nn_chain(x: np.ndarray, threshold: float) -> np.ndarray:
    """Average linkage on `x` (m unit rows), merging while the mean cross similarity >= threshold: labels.

    The nearest-neighbour chain: follow each group's most similar group until two groups are each other's
    best, merge them; a group whose best is under the threshold is final (average linkage is reducible:
    merging two other groups never brings a group closer than the nearer of the two was)."""
    m = len(x)
    total = x.astype(np.float64) @ x.astype(np.float64).T  # sum of cross similarities between groups
    size = np.ones(m)
    active = np.ones(m, bool)
    owner = np.arange(m)
    chain: list[int] = []
    remaining = m
    while remaining > 1:
        if not chain:
            chain.append(int(np.flatnonzero(active)[0]))
        top = chain[-1]
        mean = total[top] / (size[top] * size)
        mean[~active] = -np.inf
        mean[top] = -np.inf
        best = int(np.argmax(mean))
        if mean[best] < threshold:  # final: it will never reach anyone
            active[top] = False
            remaining -= 1
            chain.pop()
            continue
        if len(chain) > 1 and mean[chain[-2]] >= mean[best]:
            best = chain[-2]  # ties keep the chain's previous group, so the chain ends
        if len(chain) > 1 and best == chain[-2]:
            chain.pop()
            chain.pop()
            a, b = min(top, best), max(top, best)
            total[a] += total[b]
            total[:, a] += total[:, b]
            size[a] += size[b]
            active[b] = False
            owner[owner == b] = a
            remaining -= 1
        else:
            chain.append(best)
    return owner


def join_lone_faces(x: np.ndarray, labels: np.ndarray, join: float) -> np.ndarray:
    """Each face alone in `labels` joins the group of two faces or more whose mean template (the normalised
    mean of its unit faces) it is most similar to, when that similarity reaches `join`; the means are those
    of the groups given (a face that joins does not move them). Ties: the group listed first."""
    labels = np.asarray(labels, np.int64).copy()
    sizes = np.bincount(labels, minlength=len(labels))
    groups = np.flatnonzero(sizes >= 2)
    lone = np.flatnonzero(sizes[labels] == 1)
    if not len(groups) or not len(lone):
        return labels
    row = np.full(len(sizes), -1, np.int64)
    row[groups] = np.arange(len(groups))
    member = row[labels] >= 0
    means = np.zeros((len(groups), x.shape[1]), np.float64)
    np.add.at(means, row[labels[member]], x[member])
    means = (means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)).astype(np.float32)
    for start in range(0, len(lone), BLOCK):
        faces = lone[start : start + BLOCK]
        sims = x[faces] @ means.T
        best = np.argmax(sims, axis=1)
        ok = sims[np.arange(len(faces)), best] >= join
        labels[faces[ok]] = groups[best[ok]]
    return labels


def cluster(
    embeddings: np.ndarray,
    threshold: float,
    method: str = DEFAULT_METHOD,
    *,
    seed: int = 0,
    use_faiss: bool | None = None,
    join: float | None = None,
    graph: Graph | None = None,
) -> np.ndarray:
    """A group per face (n,), numbered by size, largest first; a group of one is an unclustered face. `join`:
    the similarity at which ``whispers+mean`` joins a lone face to a group's mean template (None: `threshold`
    itself, the default measured; the other methods ignore it). `graph`: these embeddings' threshold graph
    at `threshold` when already made (`threshold_graph`), else it is made here."""
    if method not in METHODS:
        raise ConfigError(f"unknown clustering method {method!r}; choose one of {', '.join(METHODS)}")
    for name, value in (("threshold", threshold), ("join threshold", threshold if join is None else join)):
        if not -1.0 <= float(value) <= 1.0:
            raise ConfigError(f"clustering {name} must be a cosine similarity in [-1, 1], got {value}")
    x = _unit(embeddings) if len(embeddings) else np.zeros((0, 1), np.float32)
    if len(x) == 0:
        return np.zeros(0, np.int64)
    if graph is None:
        graph = threshold_graph(x, threshold, use_faiss=use_faiss)
    elif graph.n != len(x):
        raise ConfigError(f"the graph given has {graph.n} faces, the embeddings {len(x)}")
    if method == "components":
        raw = components(graph)
    elif method == "whispers":
        raw = chinese_whispers(graph, seed=seed)
    elif method == "whispers+mean":
        raw = join_lone_faces(x, chinese_whispers(graph, seed=seed), threshold if join is None else join)
    else:
        raw = average_linkage(x, threshold, graph)
    return renumber(raw)


def renumber(labels: np.ndarray) -> np.ndarray:
    """Labels 0.. by group size, largest first; ties by the group's first face."""
    labels = np.asarray(labels)
    if not len(labels):
        return labels.astype(np.int64)
    unique, first, inverse, counts = np.unique(labels, return_index=True, return_inverse=True, return_counts=True)
    rank = np.lexsort((first, -counts))
    new = np.empty(len(unique), np.int64)
    new[rank] = np.arange(len(unique))
    return new[inverse.reshape(-1)]
