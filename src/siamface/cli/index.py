"""`siamface index`: an archive's faces and embeddings, computed with Ray Data, into Parquet or PostgreSQL.

    siamface index PATH... [--list FILE] --out DIR|postgresql://URL [--address ADDR] [--workers N] [--batch N]

See `siamface.library.index`. Exit 0 when every image is in the index, 2 on an error.
"""

from __future__ import annotations

import contextlib
import sys

from ._common import EXIT_OK, add_chain_options, print_json


def add_parsers(sub) -> None:
    from ..library.index import BATCH, TABLE

    p = sub.add_parser(
        "index",
        help="embed an archive of photos with Ray (local or a cluster) into Parquet or PostgreSQL",
        description="Find and embed every face of the photos given (folders walked, or --list: a file of "
        "paths, one a line) with Ray Data, on a local Ray started for the run or on the cluster at --address, "
        "and write one row per face (path, face number, sha256 of the file, box, score, embedding, model; an "
        "image without a face as face -1, an unreadable one as -2 with its error) to a folder of Parquet "
        f"parts or to the table {TABLE} of a PostgreSQL database with pgvector. Resumable: images already "
        "in the index are skipped, so a run stopped by a crash or a lost worker is finished by running it "
        "again, with no image twice. Paths are files every Ray node reads (on a cluster: a shared "
        "filesystem; URLs are not read). Needs the cluster extra (pip install 'siamface[cluster]').",
    )
    p.add_argument("paths", nargs="*", metavar="PATH", help="photos or folders")
    p.add_argument("--list", metavar="FILE", help="a file of image paths, one a line (# comments)")
    p.add_argument("--out", "-o", required=True, metavar="DIR|URL", help="a Parquet folder, or a postgresql:// URL")
    p.add_argument("--address", metavar="ADDR", help="an existing Ray cluster (ray://host:10001, or auto)")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="CPUs of the local Ray (default: all; not with --address)",
    )
    p.add_argument("--batch", type=int, default=BATCH, metavar="N", help=f"images per block of work (default: {BATCH})")
    add_chain_options(p)
    p.set_defaults(func=cmd_index)


def cmd_index(args) -> int:
    from ..errors import ConfigError
    from ..library.index import archive_paths, open_index, run_index
    from ..pipeline import DEFAULT_MODEL

    if not args.paths and not args.list:
        raise ConfigError("give photos or folders, or --list FILE")
    paths = archive_paths(args.paths, args.list)
    options = {
        "detector": args.detector,
        "model": args.model or DEFAULT_MODEL,
        "min_face": args.min_face,
        "upsample": args.upsample,
        "refine_keypoints": args.refine_keypoints,
        "device": args.device,
    }
    sink = open_index(args.out)

    def progress(done: int, total: int, faces: int) -> None:
        if not args.json:
            print(f"[{done}/{total}] images, {faces} faces", file=sys.stderr, flush=True)

    # Ray's own lines (a raylet's "node marked dead" under load) are printed by its threads to stdout: while it
    # runs they go to stderr, so that stdout holds this command's report alone (one JSON document with --json)
    with contextlib.redirect_stdout(sys.stderr):
        stats = run_index(
            paths, sink, options, address=args.address, workers=args.workers, batch=args.batch, progress=progress
        )
    payload = {
        "index": sink.location,
        "images": stats.images,
        "already_indexed": stats.skipped,
        "indexed": stats.done,
        "faces": stats.faces,
        "seconds": round(stats.seconds, 2),
        "faces_per_s": round(stats.faces_per_s, 2),
        "images_per_s": round(stats.images_per_s, 2),
    }
    if args.json:
        print_json(payload)
    else:
        print(
            f"{sink.location}: {stats.done} images indexed ({stats.faces} faces) in {stats.seconds:.1f} s, "
            f"{stats.faces_per_s:.1f} faces/s; {stats.skipped} were already there"
        )
    return EXIT_OK
