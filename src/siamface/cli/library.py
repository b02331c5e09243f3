"""Photo libraries: group the faces of people nobody enrolled, name a group, find a person everywhere.

    siamface cluster PATH... [--method whispers+mean|whispers|average|components] [--threshold T] [--json] [--out DIR]
                     [--enroll -g GALLERY --name KEY=NAME ...] [--cache PATH | --no-cache] [--step S]
    siamface find -g GALLERY NAME PATH... [--margin M] [--json] [--cache PATH | --no-cache] [--step S]

PATH: photos, videos, or folders (every photo and video inside, subfolders included, not through symbolic
links to folders). Every face is embedded once through the embedding cache (a re-run or a grown folder
embeds only the new files). Exit codes: cluster 0, 2 on an error (a file that cannot be read is reported
and the others are grouped; with --enroll, 1 when a named group enrolled nothing); find 0 found, 1 not
found, 2 on an error.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .._progress import printable
from ..errors import ConfigError
from ._common import (
    EXIT_ERROR,
    EXIT_NO,
    EXIT_OK,
    add_cache_options,
    add_chain_options,
    add_gallery_option,
    add_margin_option,
    open_gallery,
    pipeline_from_args,
    print_json,
)


def add_parsers(sub) -> None:
    """Add cluster and find to the `siamface` parser."""
    from ..library import DEFAULT_METHOD, METHODS
    from ..library.groups import ENROLL_TEMPLATES

    p = sub.add_parser(
        "cluster",
        help="group the faces of a photo folder or video by person (no gallery needed)",
        description="Find every face of the photos and videos given (folders: every photo and video inside, "
        "subfolders too) and group them by person without a gallery: two faces are linked when their "
        "similarity reaches one decade of false-accept rate stricter than the model's 1:1 threshold in force "
        "(the model's default 1:N threshold when nothing is calibrated; --threshold gives the linking "
        "threshold itself). Chinese whispers groups them; a face it leaves alone then joins the group whose "
        "mean template (the average of its faces) reaches that threshold. A face that belongs to no group "
        "stays alone (\"unclustered\"). A video's face track counts once, with its time range. Every "
        "file is embedded once through the embedding cache, so a re-run or a grown folder embeds only "
        "what is new. Groups are numbered largest first, each with a key (a digest of its photos and faces); "
        "--enroll names groups, by key, into a gallery through its enrolment gates. Exit code 0, or 2 on an error (a file that cannot be read is reported on "
        "stderr and the others are grouped); with --enroll, 1 when a named group enrolled nothing.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="photos, videos or folders")
    p.add_argument(
        "--method",
        choices=METHODS,
        default=DEFAULT_METHOD,
        help=f"how faces are grouped (default: {DEFAULT_METHOD}, measured best on celeba_ids; see the docs, Photo libraries)",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        help="write DIR/index.html: a self-contained contact sheet, one row of thumbnails per group",
    )
    p.add_argument(
        "--enroll",
        action="store_true",
        help="enroll the groups named by --name into the gallery -g (through its enrolment gates)",
    )
    p.add_argument(
        "--gallery",
        "-g",
        metavar="FILE|URL",
        default=os.environ.get("SIAMFACE_GALLERY"),
        help="with --enroll: the gallery (created if missing; default $SIAMFACE_GALLERY); its model and "
        "calibration are then the ones used to group",
    )
    p.add_argument(
        "--name",
        action="append",
        default=[],
        metavar="KEY=NAME",
        help="with --enroll: name the group whose key is KEY (printed beside each group, in --json and on the "
        "contact sheet) NAME; repeat for several groups. A group is named by its key, not its number: numbers "
        "follow the groups' sizes and move when photos are added; a key changes when one of its photos does",
    )
    p.add_argument(
        "--templates",
        type=int,
        default=ENROLL_TEMPLATES,
        metavar="N",
        help=f"with --enroll: faces of a group offered for enrolment, the largest (default: {ENROLL_TEMPLATES})",
    )
    _media_options(p)
    add_chain_options(p, gallery=True)
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="the linking threshold: two faces are linked when their similarity reaches it (default: the 1:1 "
        "threshold in force, calibrated or the model's, plus the model's gap to its 1:N default; see the docs, "
        "Photo libraries). It must lie in the model's plausible range, else exit 2. The gallery of --enroll "
        "keeps its own 1:1 threshold for its enrolment checks",
    )
    p.set_defaults(func=cmd_cluster)

    p = sub.add_parser(
        "find",
        help="every photo and video time range where an enrolled person appears",
        description="Find NAME, enrolled in the gallery, in photos, videos and folders (every photo and "
        "video inside, subfolders too): every face is decided as identify decides it (the same "
        "threshold, margin and audit), and counts only when identify would name NAME. A video's face "
        "track is decided once and reported as a time range. Every file is embedded once through the "
        "embedding cache. Exit code 0 when NAME was found, 1 when not, 2 on an error (a file that "
        "cannot be read: reported on stderr, the others are still searched).",
    )
    add_gallery_option(p)
    p.add_argument("name", help="the enrolled person to find")
    p.add_argument("paths", nargs="+", metavar="PATH", help="photos, videos or folders")
    add_margin_option(p)
    _media_options(p)
    add_chain_options(p, threshold=True, gallery=True)
    p.set_defaults(func=cmd_find)


def _media_options(p: argparse.ArgumentParser) -> None:
    from ..library.media import VIDEO_STEP

    add_cache_options(p)
    p.add_argument(
        "--step",
        type=float,
        default=VIDEO_STEP,
        metavar="S",
        help=f"videos: seconds between two frames read (default: {VIDEO_STEP:g})",
    )
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument(
        "--index",
        metavar="DIR",
        help="read the faces of the photos under PATH from this Parquet index (made by siamface index with the "
        "same model) instead of embedding them",
    )


def _collect(args, pipeline):
    from .._progress import Progress
    from ..library.media import collect_faces

    if not args.step > 0:
        raise ConfigError(f"--step must be > 0 seconds, got {args.step}")
    if args.index:
        from ..library.index import indexed_faces

        collected = indexed_faces(args.index, args.paths, pipeline.encoder.info.name)
    else:
        cache = None
        if not args.no_cache:
            from ..evaluation.cache import EmbeddingCache

            cache = EmbeddingCache(args.cache)
        bar = Progress(0, "reading faces", stream=sys.stderr, enabled=not args.quiet and not args.json)
        try:
            collected = collect_faces(
                pipeline, args.paths, cache, step=args.step, progress=lambda done, total, _: bar.to(done, total)
            )
        finally:
            bar.close()
            if cache is not None:
                cache.close()
    for path, message in collected.errors:
        print(f"siamface: error: {printable(path)}: {printable(message)}", file=sys.stderr)
    return collected


def _names(pairs: list[str]) -> dict[str, str]:
    """{group key: name} of the --name KEY=NAME options."""
    from ..gallery.names import check_name
    from ..library.groups import KEY_DIGITS

    names: dict[str, str] = {}
    for pair in pairs:
        key, sep, name = pair.partition("=")
        key = key.strip().lower()
        if not sep or not key:
            raise ConfigError(f"--name {pair!r}: give KEY=NAME, KEY a group's key as this command prints it")
        if key.isdigit() and len(key) < KEY_DIGITS:
            raise ConfigError(
                f"--name {pair!r}: name a group by its key (printed beside it, e.g. 'group 0, key ...'), not by "
                "its number: numbers follow the groups' sizes, so photos added to the folder since the groups "
                "were shown could give someone else's group this number"
            )
        if len(key) != KEY_DIGITS or any(c not in "0123456789abcdef" for c in key):
            raise ConfigError(f"--name {pair!r}: a group's key is {KEY_DIGITS} hex digits, as this command prints it")
        if key in names:
            raise ConfigError(f"--name: group {key} is named twice")
        names[key] = check_name(name)
    return names


# -- cluster ---------------------------------------------------------------------------------------------
def cmd_cluster(args) -> int:
    from ..library.groups import cluster_threshold, enroll_group, group_faces

    names = _names(args.name)
    if args.enroll and not names:
        raise ConfigError("--enroll needs --name KEY=NAME for at least one group")
    if names and not args.enroll:
        raise ConfigError("--name names groups for --enroll; add --enroll")
    if args.enroll and not args.gallery:
        raise ConfigError("--enroll needs --gallery FILE (or $SIAMFACE_GALLERY)")
    if args.templates < 1:
        raise ConfigError(f"--templates must be >= 1, got {args.templates}")
    gallery_spec = args.gallery if args.enroll else None
    if gallery_spec is not None:  # before the gallery is first opened (for its model): as `enroll`
        from ..gallery.core import refuse_foreign_for_writing

        refuse_foreign_for_writing(gallery_spec)
    # --threshold is the linking threshold, not the 1:1 threshold of the chain: --enroll's gates (a face must
    # match the new person's reference face) keep the gallery's own, and a loose linking threshold that put a
    # stranger in the group does not let the stranger's face be enrolled with it
    link, args.threshold = args.threshold, None
    pipeline = pipeline_from_args(args, gallery=gallery_spec)
    if link is None:
        threshold = cluster_threshold(pipeline)
    else:
        from ..decision import check_threshold

        threshold = check_threshold(link, pipeline.encoder.info, "--threshold")
    collected = _collect(args, pipeline)
    grouping = group_faces(collected.faces, threshold, model=pipeline.encoder.info.name, method=args.method)
    keys = grouping.keys
    unknown = sorted(k for k in names if k not in keys)
    if unknown:
        raise ConfigError(
            f"--name: no group has the key {unknown[0]} in this run: its photos changed since it was shown (one "
            "of them changed, or a face joined or left the group); look at the groups again"
        )
    reports = []
    if args.enroll:
        with open_gallery(args, pipeline, create=True) as gallery:
            for k in sorted(keys.index(key) for key in names):
                group = grouping.clusters[k]
                reports.append((k, enroll_group(gallery, names[keys[k]], group, limit=args.templates)))
    sheet = None
    if args.out:
        from .._files import atomic_write_bytes
        from ..gallery.exchange import private_folder
        from ..library.sheet import contact_sheet

        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise ConfigError(f"--out {args.out}: give a folder, and this is a file")
        # the sheet shows faces (biometric data): a folder of this user's only (0700, not a link), a 0600 file
        os.close(private_folder(out, empty=False, what="cluster --out"))
        sheet = out / "index.html"
        atomic_write_bytes(sheet, contact_sheet(grouping, pipeline.load_image).encode("utf-8"), mode=0o600)
    if args.json:
        payload = grouping.to_dict()
        if reports:
            payload["enrolled"] = [{"id": k, "key": keys[k], **r.to_dict()} for k, r in reports]
        if collected.errors:
            payload["errors"] = [{"file": f, "error": e} for f, e in collected.errors]
        print_json(payload)
    else:
        clustered = sum(len(g) for g in grouping.clusters)
        print(
            f"{clustered + len(grouping.unclustered)} faces in {collected.files} files: {len(grouping.clusters)} "
            f"groups ({clustered} faces), {len(grouping.unclustered)} alone; threshold {threshold:.4f}, "
            f"method {args.method}; {collected.embedded} files embedded, {collected.cached} from the cache"
        )
        for k, group in enumerate(grouping.clusters):
            files = sorted({printable(f.file) for f in group})
            shown = ", ".join(files[:3]) + (f", ... ({len(files)} files)" if len(files) > 3 else "")
            print(f"  group {k}, key {keys[k]}: {len(group)} faces: {shown}")
        for k, r in reports:
            rejected = f", {len(r.rejected)} rejected" if r.rejected else ""
            print(f"  enrolled group {k} as {r.person}: {len(r.added)} template(s) added{rejected}")
        if sheet is not None:
            print(f"contact sheet: {printable(sheet)}")
    if collected.errors:
        return EXIT_ERROR
    return EXIT_OK if all(r.added for _, r in reports) else EXIT_NO


# -- find ------------------------------------------------------------------------------------------------
def cmd_find(args) -> int:
    from ..gallery.core import DEFAULT_MARGIN
    from ..library.groups import find_person

    margin = args.margin if args.margin is not None else DEFAULT_MARGIN
    pipeline = pipeline_from_args(args, gallery=args.gallery)
    with open_gallery(args, pipeline) as gallery:
        person = gallery.store.person(args.name, metadata=False).name  # unknown: an error before any work
        collected = _collect(args, pipeline)
        found = find_person(gallery, person, collected, margin=margin)
    if args.json:
        print_json(
            {
                "gallery": args.gallery,
                "person": person,
                "found": [s.to_dict() for s in found],
                **({"errors": [{"file": f, "error": e} for f, e in collected.errors]} if collected.errors else {}),
            }
        )
    else:
        for s in found:
            where = s.file if s.time is None else f"{s.file} {s.time[0]:.1f}-{s.time[1]:.1f} s"
            box = "(" + ", ".join(f"{v:.0f}" for v in s.box) + ")"
            print(f"{printable(where)}: {person} {box} ({s.similarity:.4f})")
        if not found and collected.errors:  # not "not found": it did not look in every file
            read = collected.files - len(collected.errors)
            print(f"{person}: not in the {read} file(s) read; {len(collected.errors)} could not be read (see above)")
        elif not found:
            print(f"{person}: not found in {collected.files} file(s)")
    if collected.errors:
        return EXIT_ERROR
    return EXIT_OK if found else EXIT_NO
