"""The audit log is complete and tamper-evident (issue 24), on SQLite and PostgreSQL: a decision about a person
removed meanwhile is still written (no foreign key), every change says who made it, `gallery audit --verify`
finds an edited, a removed or a dropped last row; a face belongs to one person on import too."""

from __future__ import annotations

import json
import sqlite3

from conftest import att
from gallery_support import MODEL_128 as MODEL
from gallery_support import (  # noqa: F401
    PROBE,
    backend,
    base_gallery,
    cli,
    gallery_file,
    is_url,
    new_gallery,
    rows,
    store_spec,
    unit_vectors,
)

from siamface.gallery import AuditRecord, NewTemplate, open_store


def test_a_decision_about_a_person_removed_meanwhile_is_still_audited(store_spec):
    """An identify racing a delete: the search named the person, the deletion commits, then the decision is
    logged. With the audit's foreign key this failed (PostgreSQL: a 500 and the decision lost)."""
    with open_store(store_spec, MODEL, create=True) as s:
        gone = s.add_templates("gone", [NewTemplate(v) for v in unit_vectors(2)]).person
        s.delete("gone")
        s.log([AuditRecord("identify", None, gone.id, 0.97, 0.9, True, "best", "m")])
        latest = s.audit(limit=1)[0]
        assert (latest.kind, latest.returned, latest.accepted) == ("identify", None, True)
        assert latest.detail == {"person_removed": True}
        assert s.verify_audit().intact


def tamper(g, sql: str, params=(), returning: str = "id") -> None:
    """Change the gallery behind siamface's back, as whoever holds the file or the database could."""
    if is_url(g):
        rows(g, f"{sql} RETURNING {returning}", params)
        return
    db = sqlite3.connect(g)
    db.execute(sql, params)
    db.commit()
    db.close()


def _decisions(g) -> None:
    assert cli("verify", "-g", g, "--claim", "s3", att(3, PROBE)).returncode == 0
    assert cli("verify", "-g", g, "--claim", "s4", att(3, PROBE)).returncode == 1
    assert cli("identify", "-g", g, att(5, PROBE)).returncode == 0


def _verify(g):
    out = cli("gallery", "audit", "-g", g, "--verify", "--json")
    return out.returncode, json.loads(out.stdout)


def test_audit_verify_finds_an_edited_row(gallery_file):
    g = gallery_file
    _decisions(g)
    code, check = _verify(g)
    assert code == 0 and check["intact"] and check["rows"] >= 3
    out = cli("gallery", "audit", "-g", g, "--verify")
    assert out.returncode == 0 and f"head {check['head']}" in out.stdout
    # the denied claim turned into a granted one, behind siamface's back
    denied = rows(g, "SELECT id FROM audit WHERE kind = 'verify' ORDER BY id")[1][0]
    tamper(g, "UPDATE audit SET accepted = ? WHERE id = ?", (True, denied))
    code, check = _verify(g)
    assert code == 1 and not check["intact"]
    assert check["problems"] == [{"row": denied, "problem": "its content does not match its hash: the row was edited"}]
    out = cli("gallery", "audit", "-g", g, "--verify")
    assert out.returncode == 1 and f"audit row {denied}: its content does not match" in out.stdout


def test_audit_verify_finds_a_removed_row_and_removed_last_rows(gallery_file):
    g = gallery_file
    _decisions(g)
    ids = [r[0] for r in rows(g, "SELECT id FROM audit ORDER BY id")]
    tamper(g, "DELETE FROM audit WHERE id = ?", (ids[-2],))  # one in the middle
    code, check = _verify(g)
    assert code == 1 and [p["row"] for p in check["problems"]] == [ids[-1]]
    assert "a row was removed" in check["problems"][0]["problem"]
    tamper(g, "DELETE FROM audit WHERE id = ?", (ids[-1],))  # and the last one: now the tail
    code, check = _verify(g)
    assert code == 1 and check["problems"][-1]["row"] is None
    assert "the last row(s) were removed" in check["problems"][-1]["problem"]


def test_changes_from_the_command_line_are_audited_as_its_user(gallery_file):
    import getpass

    g = gallery_file
    assert cli("people", "rename", "-g", g, "s4", "Fourth").returncode == 0
    assert cli("people", "remove", "-g", g, "Fourth").returncode == 0
    entries = json.loads(cli("gallery", "audit", "-g", g, "--limit", "2", "--json").stdout)["entries"]
    assert [(e["kind"], e["actor"]) for e in entries] == [("delete", f"cli:{getpass.getuser()}")] * 1 + [
        ("rename", f"cli:{getpass.getuser()}")
    ]
    assert entries[0]["claimed"] == entries[1]["claimed"] and entries[0]["claimed"].startswith("removed:")
    assert "Fourth" not in json.dumps(entries) and entries[0]["detail"] == {"templates": 3}


def test_import_refuses_a_clone_of_an_enrolled_face_unless_forced(gallery_file, new_gallery, tmp_path):
    other = new_gallery("other")  # s5's face under another name, in a gallery of its own
    assert cli("enroll", "-g", other, "Not Five", att(5, 2), att(5, 3)).returncode == 0
    export = tmp_path / "clone.jsonl"
    assert cli("gallery", "export", "-g", other, export).returncode == 0
    out = cli("gallery", "import", "-g", gallery_file, export)
    assert out.returncode == 2 and "'Not Five' matches 's5'" in out.stderr and "--force" in out.stderr
    assert rows(gallery_file, "SELECT count(*) FROM people WHERE name = 'Not Five'") == [(0,)]
    out = cli("gallery", "import", "-g", gallery_file, export, "--force")
    assert out.returncode == 0 and "1 new people" in out.stdout, out.stderr
    entries = json.loads(cli("gallery", "audit", "-g", gallery_file, "--limit", "1", "--json").stdout)["entries"]
    assert entries[0]["kind"] == "import" and entries[0]["detail"] == {"created": True, "templates": 2}


def test_only_a_rows_own_counted_flag_keeps_a_denial_out_of_the_lock_out_count(store_spec):
    """`recent_denials` leaves out a denial whose detail says ``counted`` (a liveness session's failure has its
    own row), by the detail's own top-level flag: the word anywhere else in the detail (a nested key, a
    string) leaves the denial counted, as it did not when the detail was searched as text."""
    with open_store(store_spec, MODEL, create=True) as s:
        person = s.add_templates("p", [NewTemplate(v) for v in unit_vectors(1)]).person
        details = [{"counted": True}, {"note": {"counted": True}}, {"reason": '"counted"'}, {}]
        s.log([AuditRecord("verify", person.id, None, 0.1, 0.5, False, "", "m", "", d) for d in details])
        assert len(s.recent_denials(person.id, "2000-01-01T00:00:00")) == 3


def test_old_rows_pruned_keep_the_chain_verifiable_and_the_pruning_is_audited(store_spec, monkeypatch):
    """Retention: `gallery audit --prune-older-than DAYS` removes the oldest rows, the chain still verifies
    from the last row removed, the removal is a row of its own, and removing a kept row is still found."""
    from siamface.gallery import sqlbase

    real_now = sqlbase._now
    monkeypatch.setattr(sqlbase, "_now", lambda: "2020-01-01T00:00:00.000+00:00")  # rows of long ago
    with open_store(store_spec, MODEL, create=True) as s:
        old = s.add_templates("old", [NewTemplate(v) for v in unit_vectors(2)]).person
        s.log([AuditRecord("verify", old.id, old.id, 0.97, 0.9, True, "best", "m")] * 3)
        monkeypatch.setattr(sqlbase, "_now", real_now)
        s.log([AuditRecord("identify", None, old.id, 0.95, 0.9, True, "best", "m")])
    before = json.loads(cli("gallery", "audit", "-g", store_spec, "--limit", "0", "--json").stdout)["entries"]
    assert len(before) == 5  # the enrolment, 3 old decisions, 1 new

    for days in ("0.5", "nan"):
        refused = cli("gallery", "audit", "-g", store_spec, "--prune-older-than", days)
        assert refused.returncode == 2 and "at least 1 day" in refused.stderr
    out = cli("gallery", "audit", "-g", store_spec, "--prune-older-than", "30", "--json")
    assert out.returncode == 0, out.stderr
    pruned = json.loads(out.stdout)
    assert (
        pruned["removed"] == 4
        and pruned["base"] == rows(store_spec, "SELECT value FROM meta WHERE key = 'audit_base'")[0][0]
    )
    after = json.loads(cli("gallery", "audit", "-g", store_spec, "--limit", "0", "--json").stdout)["entries"]
    assert [e["kind"] for e in after] == ["audit-prune", "identify"]
    assert after[0]["detail"]["removed"] == 4 and after[1]["id"] == before[0]["id"]
    code, check = _verify(store_spec)
    assert code == 0 and check["intact"] and check["rows"] == 2
    again = json.loads(cli("gallery", "audit", "-g", store_spec, "--prune-older-than", "30", "--json").stdout)
    assert again["removed"] == 0  # nothing older left: nothing removed, nothing audited
    assert len(json.loads(cli("gallery", "audit", "-g", store_spec, "--limit", "0", "--json").stdout)["entries"]) == 2

    tamper(store_spec, "DELETE FROM audit WHERE id = ?", (after[1]["id"],))  # a kept row removed by hand
    code, check = _verify(store_spec)
    assert code == 1 and "a row was removed" in check["problems"][0]["problem"]


def test_rows_removed_by_hand_with_a_base_no_audited_prune_recorded_are_found(store_spec, monkeypatch):
    """Whoever may write the gallery deletes the oldest rows and writes `meta.audit_base` (the first row kept's
    prev_hash: no hash to compute, and the head unchanged, so a head noted elsewhere is still found): `--verify`
    must not call that intact. A base is vouched for by the last `audit-prune` row of the chain only: a prune
    after a prune verifies, rows removed by hand after a prune (the base moved on) are found."""
    from siamface.gallery import sqlbase

    real_now = sqlbase._now
    monkeypatch.setattr(sqlbase, "_now", lambda: "2020-01-01T00:00:00.000+00:00")  # rows of long ago
    with open_store(store_spec, MODEL, create=True) as s:
        ann = s.add_templates("ann", [NewTemplate(v) for v in unit_vectors(2)]).person
        s.log([AuditRecord("verify", ann.id, None, 0.1, 0.9, False, "best", "m")] * 3)  # denied claims
    ids = [r[0] for r in rows(store_spec, "SELECT id FROM audit ORDER BY id")]
    head = _verify(store_spec)[1]["head"]

    def erase_before(row_id: int) -> None:  # no prune: rows deleted, the base written by hand
        first_prev = rows(store_spec, "SELECT prev_hash FROM audit WHERE id = ?", (row_id,))[0][0]
        tamper(store_spec, "DELETE FROM audit WHERE id < ?", (row_id,))
        if rows(store_spec, "SELECT value FROM meta WHERE key = 'audit_base'"):
            tamper(store_spec, "UPDATE meta SET value = ? WHERE key = 'audit_base'", (first_prev,), "key")
        else:
            tamper(store_spec, "INSERT INTO meta (key, value) VALUES ('audit_base', ?)", (first_prev,), "key")

    erase_before(ids[2])  # the enrolment and the first denial gone
    code, check = _verify(store_spec)
    assert code == 1 and not check["intact"] and check["head"] == head
    assert "no audited prune" in check["problems"][0]["problem"]

    with open_store(store_spec, MODEL) as s:  # a real prune (its own row dated long ago too)
        assert s.prune_audit(30)["removed"] == 2
    monkeypatch.setattr(sqlbase, "_now", real_now)
    with open_store(store_spec, MODEL) as s:
        s.log([AuditRecord("verify", ann.id, ann.id, 0.97, 0.9, True, "best", "m")])
    assert _verify(store_spec)[0] == 0  # the prune vouches for its base
    out = cli("gallery", "audit", "-g", store_spec, "--prune-older-than", "30", "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["removed"] == 1  # the first prune's own row
    code, check = _verify(store_spec)
    assert code == 0 and check["rows"] == 2  # a prune after a prune: the last one vouches

    last = rows(store_spec, "SELECT max(id) FROM audit")[0][0]
    erase_before(last)  # the decision after the first prune removed by hand
    code, check = _verify(store_spec)
    assert code == 1 and "no audited prune" in check["problems"][0]["problem"]


def test_pruned_rows_leave_no_byte_in_an_sqlite_file_a_server_holds_open(tmp_path, monkeypatch):
    """Retention from cron while `serve` holds the gallery open: the removed rows stayed readable in the file
    (and its WAL) until a checkpoint, hours later on a quiet gallery. They are flushed as a removed person's are."""
    from siamface.gallery import sqlbase

    g = tmp_path / "people.db"
    monkeypatch.setattr(sqlbase, "_now", lambda: "2020-01-01T00:00:00.000+00:00")
    with open_store(g, MODEL, create=True) as s:
        ann = s.add_templates("ann", [NewTemplate(v) for v in unit_vectors(2)]).person
        s.log([AuditRecord("verify", ann.id, None, 0.1, 0.9, False, "best", "model-of-2020")] * 20)
    server = open_store(g, MODEL)  # another process's connection, as a server's
    try:
        assert len(server.audit(limit=None)) == 21
        out = cli("gallery", "audit", "-g", g, "--prune-older-than", "30", "--json")
        assert out.returncode == 0 and json.loads(out.stdout)["removed"] == 21, out.stderr
        assert [e.kind for e in server.audit(limit=None)] == ["audit-prune"]
        for part in (g, tmp_path / "people.db-wal"):
            assert not part.exists() or b"model-of-2020" not in part.read_bytes(), part
    finally:
        server.close()


def test_a_huge_or_infinite_retention_is_no_traceback(tmp_path):
    """`--prune-older-than 1e6` (before year 1) and `inf` were an OverflowError traceback."""
    g = tmp_path / "people.db"
    with open_store(g, MODEL, create=True) as s:
        s.add_templates("ann", [NewTemplate(v) for v in unit_vectors(2)])
    out = cli("gallery", "audit", "-g", g, "--prune-older-than", "1e6", "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["removed"] == 0, out.stderr
    out = cli("gallery", "audit", "-g", g, "--prune-older-than", "inf")
    assert out.returncode == 2 and "at least 1 day" in out.stderr and "Traceback" not in out.stderr
    assert _verify(g)[0] == 0 and len(json.loads(cli("gallery", "audit", "-g", g, "--json").stdout)["entries"]) == 1


def test_a_prune_asked_for_one_person_is_refused_not_applied_to_everyone(tmp_path, monkeypatch):
    """`--person ann --prune-older-than 30` pruned everyone's old rows (--person was ignored): refused."""
    from siamface.gallery import sqlbase

    g = tmp_path / "people.db"
    monkeypatch.setattr(sqlbase, "_now", lambda: "2020-01-01T00:00:00.000+00:00")
    with open_store(g, MODEL, create=True) as s:
        for name, v in zip(("ann", "bob"), unit_vectors(2)):
            s.add_templates(name, [NewTemplate(v)])
    out = cli("gallery", "audit", "-g", g, "--person", "ann", "--prune-older-than", "30")
    assert out.returncode == 2 and "give no --person" in out.stderr
    assert len(json.loads(cli("gallery", "audit", "-g", g, "--json").stdout)["entries"]) == 2


def test_the_cli_is_audited_as_its_user_id_not_as_the_user_its_environment_names(tmp_path):
    """`LOGNAME=alice siamface gallery audit --prune-older-than 1` was audited as cli:alice (getpass reads the
    environment first): whoever ran a change or a prune could put it on someone else."""
    import os
    import pwd

    g = tmp_path / "people.db"
    with open_store(g, MODEL, create=True) as s:
        s.add_templates("ann", [NewTemplate(v) for v in unit_vectors(2)])
    alias = {k: "alice-not-me" for k in ("LOGNAME", "USER", "LNAME", "USERNAME")}
    assert cli("people", "rename", "ann", "bea", "-g", g, env=alias).returncode == 0
    latest = json.loads(cli("gallery", "audit", "-g", g, "--json").stdout)["entries"][0]
    assert (latest["kind"], latest["actor"]) == ("rename", f"cli:{pwd.getpwuid(os.getuid()).pw_name}")
