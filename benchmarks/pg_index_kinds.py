"""Index kinds for a PostgreSQL gallery, side by side on one loaded database: pgvector HNSW with other graph
settings (m, ef_construction), HNSW on half-precision vectors, and IVFFlat, each on the part of the templates a
gallery's index covers (`siamface.gallery.postgres.index_part`: SFace's 128 dimensions of `sface+dlib`).

Synthetic templates (`siamface.gallery.synthetic`, 10 a person; --layout fused: as loose as real `sface+dlib`
ones, a person's SFace parts about 0.58 alike) are loaded once into a throwaway server of the `postgres`
extra (2 GB shared buffers); then each kind is built alone (3 GB of maintenance memory, one parallel worker,
as benchmarks/gallery_backends.py builds), searched with 500 probes of enrolled people at each setting
(HNSW: candidates = ``hnsw.ef_search``; IVFFlat: lists probed, 100 candidates), the settings in a shuffled
order per block of 50 probes, and dropped. A search is the product's statement (`PostgresIndex`'s: the
candidates by the part's cosine distance, each with its whole template's similarity), prepared, one round
trip; recall@1: the best candidate's person is the exact search's (NumPy, over every template); 1-tpl: 300
stored templates searched with themselves come first. The latencies are the server's search plus one round
trip, not the whole `PostgresIndex.search` (its ranking in Python adds a little): compare kinds within a run.

    python benchmarks/pg_index_kinds.py --templates 1000000 --kinds hnsw:16:128 hnsw:32:256 ivf:2000:8,16,32

--data DIR keeps the server's folder in DIR, with its templates and the last kind's index: a later run with
the same DIR and --templates loads nothing, and a first kind whose index is the one kept is not built again
("kept" in the build column). A build takes 15-60 minutes at 1M; this lets its searches be timed again on a
quiet machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BLOCK = 50


def _kind(spec: str, expression: str) -> tuple[str, str, list[int], callable]:
    """(label, CREATE INDEX statement, settings, the SET statements of a setting) of a --kinds entry."""
    from siamface.gallery.postgres import PART_INDEX

    kind, *args = spec.split(":")
    if kind in ("hnsw", "halfhnsw"):
        m, efc, *sweep = args
        if kind == "halfhnsw":
            expression = expression.replace("::vector(", "::halfvec(")
        ops = "halfvec_cosine_ops" if kind == "halfhnsw" else "vector_cosine_ops"
        sql = (
            f"CREATE INDEX {PART_INDEX} ON templates USING hnsw (({expression}) {ops}) "
            f"WITH (m = {int(m)}, ef_construction = {int(efc)})"
        )
        settings = [int(c) for c in (sweep[0].split(",") if sweep else ["100", "120", "150"])]
        return spec, sql, settings, lambda c: [f"SET hnsw.ef_search = {c}", "SET hnsw.iterative_scan = relaxed_order"]
    if kind == "ivf":
        lists, *sweep = args
        sql = f"CREATE INDEX {PART_INDEX} ON templates USING ivfflat (({expression}) vector_cosine_ops) WITH (lists = {int(lists)})"
        settings = [int(c) for c in (sweep[0].split(",") if sweep else ["8", "16", "32"])]
        return (
            spec,
            sql,
            settings,
            lambda p: [f"SET ivfflat.probes = {p}", "SET ivfflat.iterative_scan = relaxed_order"],
        )
    raise SystemExit(f"unknown kind {spec!r}: hnsw:M:EFC[:C,C], halfhnsw:M:EFC[:C,C] or ivf:LISTS[:P,P]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--templates", type=int, default=1_000_000)
    parser.add_argument("--layout", choices=["fused", "sface", "isotropic"], default="fused")
    parser.add_argument("--kinds", nargs="+", default=["hnsw:16:128", "hnsw:32:256", "ivf:2000:8,16,32"])
    parser.add_argument("--json", metavar="FILE", help="also append each result as a JSON line to FILE")
    parser.add_argument("--data", metavar="DIR", type=Path, help="keep the server's folder here (see above)")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT / "tests" / "gallery"))
    import psycopg
    from gallery_backends import _build, _bulk, _layout, _truth  # this folder's
    from pgvector.psycopg import register_vector
    from postgres_support import Cluster, server_bin

    from siamface.gallery import open_store, synthetic
    from siamface.gallery.postgres import HNSW_INDEX, PART_INDEX, _part_expression

    bindir = server_bin()
    if bindir is None:
        sys.exit("no PostgreSQL server with pgvector (pip install 'siamface[postgres]')")
    layout, model = _layout(args.layout, 256)
    d = model.embedding_size
    centres, owners, templates = synthetic.gallery(args.templates, per_person=10, d=d, seed=3, layout=layout)
    _, probes = synthetic.probes(centres, 500, seed=4, layout=layout)
    truth = [f"person{p:07d}" for p in _truth(templates, owners, probes)]
    cluster = Cluster(bindir, {"shared_buffers": "2GB", "max_wal_size": "4GB"}, root=args.data)
    try:
        url = cluster.url()
        with psycopg.connect(url, autocommit=True) as db:
            if not db.execute("SELECT 1 FROM pg_database WHERE datname = 'kinds'").fetchone():
                db.execute("CREATE DATABASE kinds")
        spec = url.rsplit("/", 1)[0] + "/kinds"
        store = open_store(spec, model, create=True)
        part = store.index_dims or d
        admin = psycopg.connect(spec, autocommit=True)
        held = admin.execute("SELECT count(*) FROM templates").fetchone()[0]
        if held == len(templates):
            print(f"{args.layout}: {held} templates of {d}-d kept in {args.data}")
        elif held:
            sys.exit(f"{args.data} holds {held} templates, not {len(templates)}: give another --data")
        else:
            admin.execute(f"DROP INDEX IF EXISTS {PART_INDEX}")
            admin.execute(f"DROP INDEX IF EXISTS {HNSW_INDEX}")
            start = time.perf_counter()
            _bulk(store, owners, templates)
            print(f"{args.layout}: {len(templates)} templates of {d}-d loaded in {time.perf_counter() - start:.0f} s")
        del centres, owners, templates
        expression = _part_expression(part)
        print(
            f"{'kind':<22} {'setting':>7} {'build s':>8} {'MB':>6} {'p50 ms':>7} {'p99 ms':>7} {'recall@1':>8} {'1-tpl':>6}"
        )
        rng = np.random.default_rng(12)
        for entry in args.kinds:
            label, sql, settings, statements = _kind(entry, expression)
            # the statement that built the index there (its comment), or None when there is none
            kept = admin.execute("SELECT obj_description(to_regclass(%s), 'pg_class')", (PART_INDEX,)).fetchone()[0]
            if kept == sql:
                build_s = None  # not built by this run
                mb = admin.execute("SELECT pg_relation_size(%s)", (PART_INDEX,)).fetchone()[0] / 2**20
            else:
                admin.execute(f"DROP INDEX IF EXISTS {PART_INDEX}")
                build_s, mb = _build(admin, sql, PART_INDEX)
                quoted = sql.replace("'", "''")  # COMMENT takes no parameter
                admin.execute(f"COMMENT ON INDEX {PART_INDEX} IS '{quoted}'")
            db = psycopg.connect(spec, autocommit=True)
            register_vector(db)
            order = expression.replace("::vector(", "::halfvec(") if "halfvec" in sql else expression
            query = f"SELECT id, person_id, -(embedding <#> %s) FROM templates ORDER BY {order} <=> %s LIMIT %s"
            ivf = "ivfflat" in sql
            names = dict(db.execute("SELECT id, name FROM people").fetchall())
            high = int(db.execute("SELECT max(id) FROM templates").fetchone()[0])
            ids = rng.choice(np.arange(1, high + 1), size=300, replace=False)
            selves = db.execute(
                "SELECT id, embedding FROM templates WHERE id = ANY(%s)", ([int(i) for i in ids],)
            ).fetchall()

            def best(q: np.ndarray, limit: int) -> tuple:
                with db.cursor(binary=True) as cur:
                    cur.execute(query, [q, q[:part], limit], prepare=True)
                    return max(cur.fetchall(), key=lambda r: r[2])

            times: dict[int, list[float]] = {c: [] for c in settings}
            found: dict[int, list[int]] = {c: [] for c in settings}
            shuffle = np.random.default_rng(11)
            for lo in range(0, len(probes), BLOCK):
                for c in shuffle.permutation(settings):
                    for s in statements(c):
                        db.execute(s)
                    limit = 100 if ivf else int(c)
                    best(probes[lo], limit)  # untimed: the setting's first search
                    for q in probes[lo : lo + BLOCK]:
                        t0 = time.perf_counter()
                        row = best(q, limit)
                        times[c].append(time.perf_counter() - t0)
                        found[c].append(row[1])
            plan = "\n".join(r[0] for r in db.execute("EXPLAIN " + query, [probes[0], probes[0][:part], 100]))
            if PART_INDEX not in plan:
                sys.exit(f"{label}: the server's plan does not use the index:\n{plan}")
            for c in settings:
                for s in statements(c):
                    db.execute(s)
                limit = 100 if ivf else c
                one = float(np.mean([best(np.asarray(v.to_numpy(), np.float32), limit)[0] == t for t, v in selves]))
                recall = float(np.mean([names[f] == t for f, t in zip(found[c], truth)]))
                row = {
                    "templates": args.templates,
                    "layout": args.layout,
                    "kind": label,
                    "setting": int(c),
                    "build_s": build_s,
                    "index_mb": mb,
                    "p50_ms": 1000 * float(np.median(times[c])),
                    "p99_ms": 1000 * float(np.percentile(times[c], 99)),
                    "recall_at_1": recall,
                    "one_template_recall": one,
                }
                print(
                    f"{label:<22} {c:>7} {'kept' if build_s is None else f'{build_s:.0f}':>8} {mb:>6.0f} {row['p50_ms']:>7.2f} {row['p99_ms']:>7.2f} "
                    f"{recall:>8.3f} {one:>6.3f}",
                    flush=True,
                )
                if args.json:
                    with open(args.json, "a") as out:
                        out.write(json.dumps(row) + "\n")
            db.close()
            if args.data is None or entry != args.kinds[-1]:
                admin.execute(f"DROP INDEX {PART_INDEX}")
        admin.close()
        store.close()
    finally:
        cluster.stop(keep=args.data is not None)


if __name__ == "__main__":
    main()
