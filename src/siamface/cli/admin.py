"""The gallery's records, for an operator (each with --gallery G):

    siamface people   list | show NAME | rename OLD NEW | remove NAME
    siamface gallery  export FILE [--with-images] | import FILE [--merge] [--force] | stats
                      | audit [--limit N] [--verify] [--prune-older-than DAYS] | export-images DIR
                      | reembed --model M | migrate

Recognition against a gallery (enroll, identify, verify --claim) is in `gallery.py`. Exit codes and
``--json`` as there.
"""

from __future__ import annotations

import json

from ..errors import ConfigError
from ._common import (
    EXIT_NO,
    EXIT_OK,
    add_chain_options,
    add_gallery_option,
    open_gallery,
    pipeline_from_args,
    print_json,
)


def add_parsers(sub) -> None:
    """Add people and gallery to the `siamface` parser."""
    p = sub.add_parser(
        "people",
        help="list, show, rename, remove the people of a gallery",
        description="Manage the people of a gallery (an SQLite file or a postgresql:// URL).",
    )
    psub = p.add_subparsers(dest="people_command", metavar="ACTION", required=True)
    q = psub.add_parser("list", help="the people enrolled")
    add_gallery_option(q, json_flag=True)
    q.set_defaults(func=cmd_list)
    q = psub.add_parser("show", help="one person and their templates")
    add_gallery_option(q, json_flag=True)
    q.add_argument("name")
    q.set_defaults(func=cmd_show)
    q = psub.add_parser("rename", help="rename a person")
    add_gallery_option(q, json_flag=True)
    q.add_argument("old")
    q.add_argument("new")
    q.set_defaults(func=cmd_rename)
    q = psub.add_parser(
        "remove",
        help="remove a person: every template and kept image; audit rows keep only an opaque reference",
        description="Remove a person with every trace: templates and kept images are deleted "
        "and their bytes overwritten (SQLite secure_delete, WAL checkpointed); the "
        "audit rows about them stay, unchanged, with the person's opaque reference, "
        "which nothing links to them any more. The removal is audited.",
    )
    add_gallery_option(q, json_flag=True)
    q.add_argument("name")
    q.set_defaults(func=cmd_delete)

    p = sub.add_parser(
        "gallery",
        help="export, import, migrate, stats, audit, re-embed a gallery; export its kept face images",
        description="Manage a gallery (an SQLite file or a postgresql:// URL).",
    )
    gsub = p.add_subparsers(dest="gallery_command", metavar="ACTION", required=True)
    q = gsub.add_parser(
        "export",
        help="write the gallery to one file (JSON lines, documented format)",
        description="Write every person and template to FILE: JSON lines, a header (format "
        "siamface-gallery v1, the model) then one line per person with templates "
        "as base64 little-endian float32. No images unless --with-images (and the "
        "gallery keeps them). The file is biometric data, unencrypted (written 0600). An existing FILE is "
        "replaced only when it is an earlier export.",
    )
    add_gallery_option(q, json_flag=True)
    q.add_argument("file", help="the export file to write (replaced atomically; only an earlier export is replaced)")
    q.add_argument("--with-images", action="store_true", help="include the kept face images")
    q.set_defaults(func=cmd_export)
    q = gsub.add_parser(
        "import",
        help="add the people of an export file to a gallery",
        description="Add every person of an export FILE, in one transaction. The gallery is "
        "created (bound to the file's model) when it does not exist; an existing "
        "one must be bound to the same model. A name already enrolled is an error "
        "unless --merge, which adds the templates to that person: those that match one of the "
        "person's templates at the 1:1 threshold in force (as enroll adds images to an enrolled "
        "person), all of them with --force. A face belongs to one person: a new person whose "
        "templates match someone enrolled, or another new person of the file, at the 1:N "
        "threshold is an error (nothing imported) unless --force.",
    )
    add_gallery_option(q, json_flag=True)
    q.add_argument("file", help="an export file (siamface gallery export)")
    q.add_argument("--merge", action="store_true", help="add to people already enrolled under the same name")
    q.add_argument(
        "--force",
        action="store_true",
        help="import people whose face matches someone else's, and with --merge add the templates that "
        "match none of the person's templates too",
    )
    q.add_argument(
        "--keep-images",
        action="store_true",
        help="when creating the gallery: keep the images the file carries (stored unencrypted)",
    )
    q.set_defaults(func=cmd_import)
    q = gsub.add_parser(
        "migrate",
        help="bring the gallery's schema to this siamface's version",
        description="Apply the pending schema migrations (one transaction) and report the "
        "schema version before and after. Version 3: an SQLite file keeps a log "
        "of template changes (the FAISS index follows it); a PostgreSQL database "
        "keeps templates as pgvector vectors with an HNSW index (converted from "
        "bytes; the server needs pgvector, and a damaged template stops the "
        "migration with nothing changed). Version 4: a hash-chained audit of every decision and "
        "change, rows keeping each person's opaque reference instead of a foreign key (the rows "
        "there are chained as found). Version 5: each person's look-alike skeleton stored and indexed "
        "(the check that a new name does not look like another's is one lookup); people enrolled "
        "before that check whose names look alike all stay. Version 6 (PostgreSQL): templates over 128-d "
        "(fused models) are indexed on their first part (a fusion's first encoder, otherwise the leading "
        "128 dimensions) and each search ranks that index's candidates on the whole template; the new "
        "index is built before the old one is dropped, in the same transaction. Every run also computes each stored "
        "skeleton again from its name and rewrites those that differ (skeletons_repaired).",
    )
    add_gallery_option(q, json_flag=True)
    q.set_defaults(func=cmd_migrate)
    q = gsub.add_parser("stats", help="counts, model, file size")
    add_gallery_option(q, json_flag=True)
    q.set_defaults(func=cmd_stats)
    q = gsub.add_parser(
        "audit",
        help="the latest decisions and changes logged; --verify checks the hash chain",
        description="Show the audit log, newest first: every decision (verify, identify: what the "
        "client was told, liveness included) and every change (enrol, add-faces, rename, metadata, "
        "delete, import), each with who asked (key:ID for an API key, cli:USER otherwise). Rows "
        "are chained by hash; --verify recomputes the chain and exits 1, naming the row, when a "
        "row was edited, removed or reordered (0 when intact), and prints the head to note "
        "elsewhere: a later head must follow from it.",
    )
    add_gallery_option(q, json_flag=True)
    q.add_argument("--limit", type=int, default=20, metavar="N", help="entries to show (default: 20; 0: all)")
    q.add_argument("--person", metavar="NAME", help="only entries naming this person")
    q.add_argument("--verify", action="store_true", help="check the hash chain instead of listing")
    q.add_argument(
        "--prune-older-than",
        type=float,
        metavar="DAYS",
        help="remove the rows older than DAYS (at least 1) instead of listing, oldest first: the chain stays "
        "verifiable from the last row removed, and the removal is audited (export what you must keep first: "
        "--json --limit 0)",
    )
    q.set_defaults(func=cmd_audit)
    q = gsub.add_parser(
        "export-images",
        help="write the kept face images, a folder per person (to train on)",
        description="Write every kept face image (a gallery created with --keep-images) as "
        "DIR/<person>/<template id>.png: the folder-per-person layout `siamface "
        "train` reads. DIR must be new or an empty folder of yours, not a link (an existing one is made 0700 "
        "first). The images are biometric data: the folders are written 0700 and the files 0600; delete DIR "
        "when done.",
    )
    add_gallery_option(q, json_flag=True)
    q.add_argument("dir", help="the folder to write (created 0700; an existing one must be empty, yours, not a link)")
    q.add_argument("--person", metavar="NAME", help="only this person's images")
    q.set_defaults(func=cmd_export_images)
    q = gsub.add_parser(
        "reembed",
        help="re-embed every template with another model (needs kept images)",
        description="Recompute every template from its kept face image with --model (default: "
        "the default model) and bind the gallery to that model, in one transaction.",
    )
    add_gallery_option(q)
    add_chain_options(q)
    q.set_defaults(func=cmd_reembed)


# -- gallery management ------------------------------------------------------------------------------------
def _store(args):
    from ..gallery.backends import open_store

    return open_store(args.gallery)


def cmd_list(args) -> int:
    with _store(args) as store:
        people = store.people()
    if args.json:
        print_json({"gallery": args.gallery, "people": [p.to_dict() for p in people]})
    else:
        for p in people:
            print(f"{p.name}\t{p.n_templates} template(s)\tsince {p.created}")
        print(f"{len(people)} people")
    return EXIT_OK


def cmd_show(args) -> int:
    with _store(args) as store:
        person = store.person(args.name)
        templates = store.templates(person.name)
    if args.json:
        print_json({**person.to_dict(), "template_list": [t.to_dict() for t in templates]})
    else:
        print(f"{person.name} (id {person.id}, since {person.created}), {person.n_templates} template(s)")
        if person.metadata:
            print(f"  metadata: {json.dumps(person.metadata)}")
        for t in templates:
            q = t.quality
            print(
                f"  template {t.id}: {t.source}  face {q.get('face_px', '?')} px, sharpness "
                f"{q.get('sharpness', '?')}, roll {q.get('roll_deg', '?')}, yaw {q.get('yaw', '?')}"
                + ("  [image kept]" if t.has_image else "")
            )
    return EXIT_OK


def cmd_delete(args) -> int:
    with _store(args) as store:
        person = store.person(args.name, metadata=False)  # a person whose metadata is damaged can go
        removed = store.delete(person.name)
    if args.json:
        print_json({"removed": person.name, "templates": removed})
    else:
        print(
            f"removed {person.name!r}: {removed} template(s) and their images; audit entries keep an opaque reference"
        )
    return EXIT_OK


def cmd_rename(args) -> int:
    with _store(args) as store:
        person = store.rename(args.old, args.new)
    if args.json:
        print_json(person.to_dict())
    else:
        print(f"renamed {args.old!r} to {person.name!r}")
    return EXIT_OK


def cmd_stats(args) -> int:
    with _store(args) as store:
        stats = store.stats()
    if args.json:
        print_json(stats)
    else:
        for key, value in stats.items():
            print(f"{key}: {value}")
    return EXIT_OK


def cmd_audit(args) -> int:
    if args.verify and args.prune_older_than is not None:
        raise ConfigError("give --verify or --prune-older-than, not both")
    if args.person is not None and args.prune_older_than is not None:
        raise ConfigError("--prune-older-than removes everyone's old rows (the chain is one): give no --person")
    if args.verify:
        return _verify_audit(args)
    if args.prune_older_than is not None:
        from ..gallery.store import AUDIT_KEPT_DAYS

        if not AUDIT_KEPT_DAYS <= args.prune_older_than < float("inf"):  # NaN too
            raise ConfigError(
                f"--prune-older-than: audit rows are kept at least {AUDIT_KEPT_DAYS:g} day (a finite number), "
                f"got {args.prune_older_than:g}"
            )
        with _store(args) as store:
            pruned = store.prune_audit(args.prune_older_than)
        if args.json:
            print_json({"gallery": args.gallery, **pruned})
        else:
            print(f"removed {pruned['removed']} audit row(s) from before {pruned['before']}")
        return EXIT_OK
    with _store(args) as store:
        entries = store.audit(limit=args.limit if args.limit > 0 else None, person=args.person)
    if args.json:
        print_json({"gallery": args.gallery, "entries": [e.to_dict() for e in entries]})
    else:
        for e in entries:
            if e.kind not in ("verify", "identify"):
                detail = ", ".join(f"{k} {v}" for k, v in e.detail.items())
                print(
                    f"{e.time}  {e.kind:<10} {e.claimed_label or '-'}  by {e.actor}"
                    + (f"  ({detail})" if detail else "")
                )
                continue
            score = f"{e.score:.4f}" if e.score is not None else "-"
            who = f"claim {e.claimed_label!r} -> " if e.kind == "verify" else ""
            print(
                f"{e.time}  {e.kind:<10} {who}{e.returned_label or 'nobody'}  score {score} "
                f"threshold {e.threshold:.4f}  {'accepted' if e.accepted else 'denied'}"
                + (f"  ({e.rule})" if e.rule else "")
                + (f"  by {e.actor}" if e.actor else "")
            )
    return EXIT_OK


def _verify_audit(args) -> int:
    """`gallery audit --verify`: 0 when the chain is whole, 1 (naming the rows) when it is not."""
    with _store(args) as store:
        check = store.verify_audit()
    if args.json:
        print_json({"gallery": args.gallery, **check.to_dict()})
    elif check.intact:
        print(f"audit intact: {check.rows} row(s) chained; head {check.head}")
    else:
        for row, problem in check.problems:
            print(f"audit row {row}: {problem}" if row is not None else f"audit: {problem}")
        print(f"audit NOT intact: {len(check.problems)} problem(s) in {check.rows} row(s)")
    return EXIT_OK if check.intact else EXIT_NO


def cmd_export(args) -> int:
    from ..gallery.exchange import export_gallery

    with _store(args) as store:
        summary = export_gallery(store, args.file, with_images=args.with_images)
    if args.json:
        print_json(summary.to_dict())
    else:
        print(
            f"exported {summary.people} people, {summary.templates} template(s)"
            + (f", {summary.images} image(s)" if summary.images else "")
            + f" to {summary.path}"
        )
    return EXIT_OK


def _merge_threshold(args):
    """The 1:1 threshold in force on the gallery (its model, the calibration beside it or the user's), as
    enroll applies it to images added to an enrolled person; None when nothing is checked."""
    from ..factory import gallery_thresholds
    from ..gallery.backends import gallery_exists

    if not args.merge or args.force or not gallery_exists(args.gallery):
        return None
    return gallery_thresholds(args.gallery).verify


def _clash_threshold(args):
    """The 1:N threshold in force on an existing gallery (by FPIR: for its size now), at which a new person of
    an import must match nobody else (a face belongs to one person); None with --force, or for a gallery the
    import creates."""
    from ..factory import open_gallery
    from ..gallery.backends import gallery_exists

    if args.force or not gallery_exists(args.gallery):
        return None
    with open_gallery(args.gallery) as gallery:
        return gallery.thresholds.identify


def cmd_import(args) -> int:
    from ..gallery.core import refuse_foreign_for_writing
    from ..gallery.exchange import import_into

    refuse_foreign_for_writing(args.gallery)
    summary, location, create = import_into(
        args.gallery,
        args.file,
        merge=args.merge,
        keep_images=args.keep_images,
        match=_merge_threshold(args),
        clash=_clash_threshold(args),
    )
    if args.json:
        print_json({"gallery": location, "created": create, **summary.to_dict()})
    else:
        print(
            f"imported {summary.templates} template(s): {summary.added_people} new people, "
            f"{summary.merged_people} merged"
            + (f", {summary.skipped} duplicate(s) skipped" if summary.skipped else "")
            + (
                f", {summary.refused} refused: matching none of the person's templates (--force adds them)"
                if summary.refused
                else ""
            )
            + (
                f", {summary.images_dropped} image(s) not kept (the gallery keeps none)"
                if summary.images_dropped
                else ""
            )
        )
    return EXIT_OK


def cmd_migrate(args) -> int:
    from ..gallery.backends import open_store
    from ..gallery.store import ReadOnlyGalleryError

    with open_store(args.gallery) as store:  # opening applies the pending migrations, in one transaction
        before, after = store.opened_version, store.schema_version()
        if after < store.SCHEMA_VERSION:  # read-only: opened as it is (`READABLE_SINCE`), not migrated
            raise ReadOnlyGalleryError(
                f"{store.location}: the gallery's schema (version {after}) needs migrating to version "
                f"{store.SCHEMA_VERSION}, and it is read-only here: run `siamface gallery migrate` with write access"
            )
        repaired = 0 if store.read_only else store.repair_skeletons()
    if args.json:
        print_json(
            {
                "gallery": store.location,
                "from_version": before,
                "schema_version": after,
                "migrated": before != after,
                "skeletons_repaired": repaired,
            }
        )
    else:
        print(
            f"{store.location}: schema version {after}"
            + (f" (migrated from {before})" if before != after else " (up to date)")
            + (f"; {repaired} stored name skeleton(s) did not match the name and were rewritten" if repaired else "")
        )
    return EXIT_OK


def cmd_export_images(args) -> int:
    from ..gallery.exchange import export_images

    summary = export_images(args.gallery, args.dir, person=args.person)
    if args.json:
        print_json(summary.to_dict())
    else:
        print(
            f"wrote {summary.images} image(s) of {summary.people} people to {summary.dir}"
            + (f"; {summary.without_image} template(s) have no kept image" if summary.without_image else "")
            + f"\ntrain on them with: siamface train {summary.dir}"
        )
    return EXIT_OK


def cmd_reembed(args) -> int:
    from ..pipeline import DEFAULT_MODEL

    args.model = args.model or DEFAULT_MODEL  # the move's target: the default, unless --model names another
    pipe = pipeline_from_args(args, gallery=args.gallery)
    with open_gallery(args) as gallery:
        before = gallery.store.model
        n = gallery.reembed(pipe)
        after = gallery.store.model
    if args.json:
        print_json({"templates": n, "from": before.name, "to": after.name, "to_version": after.version})
    else:
        print(f"re-embedded {n} template(s): {before.describe()} -> {after.describe()}")
    return EXIT_OK
