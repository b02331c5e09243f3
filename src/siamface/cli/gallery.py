"""Recognition against a gallery (the records' commands, people and gallery, are in `admin.py`):

    siamface enroll   --gallery G NAME IMAGES... | --folder DIR | --video FILE NAME | --camera N NAME
                      [--frames N] [--min-gap S] [--timeout S] [--strict] [--keep-images] [--force]
                      (--folder: a folder of person-named sub-folders; with NAME, DIR's images are NAME's)
    siamface identify --gallery G PROBE... [--top-k K] [--margin M] [--out PNG|DIR]

A gallery G is an SQLite file, or a PostgreSQL database named by URL (``postgresql://user@host:port/db``,
the ``postgres`` extra) shared by several processes and machines.

Exit codes: 0 accepted / found / enrolled, 1 denied / unknown / nothing enrolled, 2 error (identify: a probe
that cannot be read or holds no face, the other probes answered all the same). ``--json`` prints
JSON on stdout. The gallery may also be named by ``$SIAMFACE_GALLERY``. A calibration file beside the
gallery (``<gallery>.thresholds.json``, written by ``siamface calibrate``) sets the threshold.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

from .._progress import Progress, printable
from ..errors import ConfigError
from ._common import (
    EXIT_ERROR,
    EXIT_NO,
    EXIT_OK,
    add_chain_options,
    add_fpir_option,
    add_gallery_option,
    add_margin_option,
    open_gallery,
    pipeline_from_args,
    print_json,
)


def add_parsers(sub) -> None:
    """Add enroll and identify to the `siamface` parser."""
    p = sub.add_parser(
        "enroll",
        help="add a person (or people) to a gallery",
        description="Enroll one person from image files, a video or a camera, or many people from a folder "
        "of person-named sub-folders (--folder; with NAME, the folder's images are all NAME's). "
        "A video or camera session keeps --frames good frames that are diverse (not too alike, "
        "not too close in time). Every image passes "
        "quality gates (one face, size, pose, sharpness, not a near-duplicate) or is rejected "
        "with its reason. A NAME already enrolled (names match ignoring case) gets the new "
        "images added, but only those whose face matches one of the person's templates at the "
        "1:1 threshold (--force adds the others too); the output says whether a person was "
        "created or added to. A face belongs to one person: a new NAME whose face already matches "
        "someone enrolled (at the 1:N threshold) is not created (rejected as already-enrolled, "
        "naming whom) unless --force. Names: letters, numbers, single spaces and . , ' ’ - _ ( ) & @ +, "
        "starting with a letter or a number (see the docs, Galleries). The gallery file is created, "
        "bound to the model, if it does not exist. Exit code 0 when every person got at least "
        "one template, 1 otherwise, 2 on an error (nothing enrolled).",
    )
    add_gallery_option(p)
    p.add_argument("name", nargs="?", help="the person's name (none with --folder of person folders)")
    p.add_argument("images", nargs="*", help="image files of that person")
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--folder",
        "--bulk",
        metavar="DIR",
        dest="folder",
        help="every sub-folder of DIR is one person, named after it (progress on stderr); "
        "with NAME: every image directly in DIR, all of NAME. --bulk is an alias",
    )
    src.add_argument("--video", metavar="FILE", help="sample frames of a video file of one person")
    src.add_argument("--camera", metavar="N", type=int, help="capture frames from camera number N (headless)")
    p.add_argument(
        "--frames",
        type=int,
        default=5,
        metavar="N",
        help="with --video/--camera: good, diverse frames to keep (default: 5)",
    )
    p.add_argument(
        "--min-gap",
        type=float,
        default=None,
        metavar="S",
        help="with --video/--camera: seconds between two frames kept (default: 0.5 for a camera, "
        "0 for a file, whose frames are already spread over its length)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="S",
        help="with --video/--camera: stop the capture after S seconds (default: 30 for a camera, none for a file)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="reject images with several faces (default: use the largest, with a warning)",
    )
    p.add_argument(
        "--min-size",
        type=int,
        default=60,
        metavar="PX",
        help="reject faces whose box is smaller than PX pixels (default: 60)",
    )
    p.add_argument(
        "--min-sharpness",
        type=float,
        default=None,
        metavar="V",
        help="reject chips whose Laplacian variance is under V (default: 25, measured)",
    )
    p.add_argument(
        "--keep-images",
        action="store_true",
        help="when creating the gallery: keep a face crop with each template (stored "
        "unencrypted; needed to re-embed with another model)",
    )
    p.add_argument("--metadata", metavar="JSON", help="a JSON object stored with the person")
    p.add_argument(
        "--force",
        action="store_true",
        help="add images to an enrolled person even when their face does not match the person's "
        "templates at the 1:1 threshold, and create a new person whose face already matches someone "
        "enrolled (both refused by default)",
    )
    add_chain_options(p, threshold=True, gallery=True)
    p.set_defaults(func=cmd_enroll)

    p = sub.add_parser(
        "identify",
        help="who are the faces in these images? (1:N against a gallery)",
        description="Name every face of each probe: the enrolled person with the best template similarity "
        "when it reaches the threshold and the next person is more than --margin below; "
        "'ambiguous' when the next person is within the margin; else 'unknown'. The top K "
        "people are shown as evidence. Logged in the gallery's audit. A probe that cannot be "
        "read or holds no face is reported as an error (on stderr; under \"errors\" with --json) "
        "and the other probes are still answered. Exit code 0 when every probe has at least one "
        "known face (others beside it may be unknown), 1 when a probe has none (every face "
        "unknown or ambiguous), 2 when a probe was an error. The 1:N threshold is set by --fpir for the "
        "gallery's size (people and templates), unless --threshold fixes it; every answer says the "
        "threshold, the FPIR target and the gallery size.",
    )
    add_gallery_option(p)
    p.add_argument(
        "probes",
        nargs="+",
        metavar="PROBE",
        help="probe images, or folders: every image inside, subfolders included, in natural order "
        "(symbolic links to folders are not followed)",
    )
    p.add_argument(
        "--top-k",
        "--top",
        type=int,
        default=5,
        metavar="K",
        dest="top",
        help="candidates to show per face (default: 5)",
    )
    add_margin_option(p)
    add_fpir_option(p)
    p.add_argument(
        "--out",
        metavar="PNG|DIR",
        help="write the probe with boxes, names and scores drawn (several probes: a folder, one <name>.png per probe)",
    )
    add_chain_options(p, threshold=True, gallery=True)
    p.set_defaults(func=cmd_identify)


class _Progress:
    """enroll --folder's progress: a line on stderr per person (redrawn in place on a terminal)."""

    def __init__(self, stream=None) -> None:
        self.bar = Progress(0, stream=stream, width=30, interval=0, lines=True)

    def __call__(self, done: int, total: int, report) -> None:
        rejected = f", {len(report.rejected)} rejected" if report.rejected else ""
        self.bar.to(done, total, f"{report.person}: +{len(report.added)}{rejected}")
        if done == total:
            self.bar.close()


# -- enroll ------------------------------------------------------------------------------------------
def cmd_enroll(args) -> int:
    from ..gallery.enroll import QualityGates

    sources = [bool(args.images), bool(args.folder), bool(args.video), args.camera is not None]
    named = [args.name] if args.name and not args.images else []  # with images, NAME is a name
    folders = [path for path in [*named, *args.images] if os.path.isdir(path)]
    if folders and not any(sources[1:]):  # a folder where images or a name go: say which option takes it
        if args.images:
            raise ConfigError(
                f"{folders[0]} is a folder, not an image: 'enroll {args.name} --folder {folders[0]}' enrolls "
                f"every image directly in it as {args.name}"
            )
        raise ConfigError(
            f"{folders[0]} is a folder: 'enroll --folder {folders[0]}' enrolls each of its sub-folders as a "
            f"person, 'enroll NAME --folder {folders[0]}' every image directly in it as NAME"
        )
    if sum(sources) != 1:
        if args.name and not any(sources[1:]) and not args.images:
            raise ConfigError(f"enroll {args.name}: give image files, or one of --folder, --video, --camera")
        raise ConfigError("enroll takes exactly one source: NAME IMAGES..., --folder DIR, --video FILE or --camera N")
    capture = bool(args.video) or args.camera is not None
    if capture and not args.name:
        raise ConfigError("--video and --camera need the person's NAME")
    if args.frames < 1:
        raise ConfigError(f"--frames must be >= 1, got {args.frames}")
    if (args.min_gap is not None or args.timeout is not None) and not capture:
        raise ConfigError("--min-gap and --timeout apply to --video and --camera only")
    if (args.min_gap is not None and not 0 <= args.min_gap < math.inf) or (
        args.timeout is not None and not 0 < args.timeout < math.inf
    ):  # NaN and infinity too: a capture with either never ends
        raise ConfigError("--min-gap must be >= 0 and --timeout > 0 seconds, finite")
    metadata = None
    if args.metadata:
        from ..gallery.sqlbase import MAX_JSON_DEPTH, json_object

        try:
            metadata = json.loads(args.metadata)
        except ValueError as exc:
            raise ConfigError(f"--metadata is not valid JSON ({exc})") from None
        except RecursionError:
            raise ConfigError(f"--metadata is nested more than {MAX_JSON_DEPTH} levels deep") from None
        json_object(metadata, "--metadata")  # the store's bounds, checked before any gallery is created
    if args.folder and not args.name and metadata:
        raise ConfigError("--metadata is for one person; a folder of person folders enrolls many")
    if args.name is not None:  # a bad name creates no gallery and runs no model
        from ..gallery.names import check_name

        check_name(args.name)
    gates = QualityGates(
        min_face=args.min_size,
        strict=args.strict,
        **({"min_sharpness": args.min_sharpness} if args.min_sharpness is not None else {}),
    )
    frames = None
    if capture:  # open the source first: a bad one creates no gallery
        from ..gallery.core import CAMERA_TIMEOUT_S
        from ..gallery.enroll import video_frames

        camera = args.camera is not None
        frames = video_frames(
            args.camera if camera else args.video,
            candidates=max(30, args.frames * 12),
            max_frames=None if camera else 600,
        )
        min_gap = args.min_gap if args.min_gap is not None else (0.5 if camera else 0.0)
        timeout = args.timeout if args.timeout is not None else (CAMERA_TIMEOUT_S if camera else None)
    from ..gallery.core import refuse_foreign_for_writing

    refuse_foreign_for_writing(args.gallery)
    pipe = pipeline_from_args(args, gallery=args.gallery)
    with open_gallery(args, pipe, create=True, keep_images=args.keep_images) as gallery:
        gallery.gates = gates
        if args.folder and not args.name:
            reports = gallery.enroll_bulk(args.folder, progress=_Progress(), force=args.force)
        elif args.folder:
            reports = [gallery.enroll_folder(args.folder, args.name, metadata=metadata, force=args.force)]
        elif frames is not None:
            reports = [
                gallery.enroll_frames(
                    args.name,
                    frames,
                    keep=args.frames,
                    min_gap=min_gap,
                    timeout=timeout,
                    metadata=metadata,
                    force=args.force,
                )
            ]
        else:
            reports = [
                gallery.enroll(args.name, args.images, sources=list(args.images), metadata=metadata, force=args.force)
            ]
    if args.json:
        print_json({"gallery": args.gallery, "people": [r.to_dict() for r in reports]})
    else:
        for r in reports:
            print(_enrolled_line(r, args.name if args.name is not None else r.person))
            for rejection in r.rejected:
                print(f"  rejected ({rejection.reason}): {printable(rejection.message)}")
            for warning in r.warnings:
                print(f"  warning: {printable(warning)}")
        if not reports:
            print(f"{printable(args.folder)}: no person folders found")
    return EXIT_OK if reports and all(r.added for r in reports) else EXIT_NO


def _enrolled_line(report, given: str) -> str:
    """What happened to one person, saying whether they were created, added to, or not enrolled at all."""
    rejected = f"; {len(report.rejected)} image(s) rejected" if report.rejected else ""
    same = "" if given == report.person else " (names match ignoring case)"
    if report.created:
        return f"{report.person}: new person created, {len(report.added)} template(s) added{rejected}"
    if report.existing and report.added:
        return (
            f"{given}: {len(report.added)} template(s) added to the existing person {report.person!r}{same} "
            f"({report.templates_total} in total){rejected}"
        )
    if report.existing:
        return (
            f"{given}: nothing added to the existing person {report.person!r}{same} "
            f"({report.templates_total} in total){rejected}"
        )
    return f"{given}: not enrolled, no image passed; no person was created{rejected}"


# -- verify --claim (1:1) -------------------------------------------------------------------------------
def cmd_claim(args) -> int:
    """`siamface verify --gallery G --claim NAME PROBE` (the parser is in `faces`)."""
    from ..gallery.core import DEFAULT_FRACTION

    if args.claim is None:
        raise ConfigError("verify --gallery needs --claim NAME (the identity to check)")
    args.gallery = args.gallery or os.environ.get("SIAMFACE_GALLERY")
    if not args.gallery:
        raise ConfigError("verify --claim needs --gallery FILE (or $SIAMFACE_GALLERY)")
    if args.b is not None:
        raise ConfigError(f"verify --claim takes one PROBE image, got two ({args.a}, {args.b})")
    rule = args.rule or "best"
    if args.fraction is not None and rule != "fraction":
        raise ConfigError("--fraction applies to --rule fraction only")
    fraction = args.fraction if args.fraction is not None else DEFAULT_FRACTION
    pipe = pipeline_from_args(args, gallery=args.gallery)
    with open_gallery(args, pipe) as gallery:
        result = gallery.verify(args.claim, args.a, rule=rule, fraction=fraction)
    if args.json:
        print_json(result.to_dict())
    else:
        verdict = "GRANTED" if result.accepted else "DENIED"
        rule = f"{result.rule} {result.fraction:g}" if result.fraction is not None else result.rule
        print(
            f"{verdict}: {args.a} {'is' if result.accepted else 'is not'} {result.claim!r} "
            f"(rule {rule}: score {result.score:.4f} {'>=' if result.accepted else '<'} threshold "
            f"{result.threshold:.4f}; {result.matched}/{len(result.templates)} templates match)"
        )
        far = f"; FAR {result.threshold_far:.3g} at this threshold" if result.threshold_far is not None else ""
        print(f"  threshold: {result.threshold_source}{far}")
        for t in result.templates:
            print(f"  template {t.template_id}: {t.similarity:.4f} {'match' if t.matched else '-'}  {t.source}")
        for note in result.notes:
            print(f"  note: {note}")
    return EXIT_OK if result.accepted else EXIT_NO


# -- identify (1:N) -------------------------------------------------------------------------------------
def cmd_identify(args) -> int:
    from ..errors import ImageError, NoFaceError
    from ..gallery.core import DEFAULT_MARGIN

    if args.top < 1:
        raise ConfigError(f"--top-k must be >= 1, got {args.top}")
    margin = args.margin if args.margin is not None else DEFAULT_MARGIN
    from ..datasets import files_under

    probes = files_under(args.probes)
    outputs = _outputs(args.out, probes) if args.out else {}
    pipe = pipeline_from_args(args, gallery=args.gallery)
    results, errors, annotated = [], [], {}
    with open_gallery(args, pipe) as gallery:
        for probe in probes:
            try:  # one bad probe is reported; the others are still answered
                result = gallery.identify(probe, top=args.top, margin=margin, fpir=args.fpir)
                if not result.faces:
                    raise NoFaceError(probe, getattr(pipe.detector, "name", ""))
            except (ImageError, NoFaceError) as exc:
                errors.append((probe, str(exc)))
                continue
            results.append(result)
            if probe in outputs:
                _annotate(probe, result, outputs[probe])
                annotated[probe] = outputs[probe]
    if args.json:
        print_json(
            {
                "gallery": args.gallery,
                "results": [r.to_dict() for r in results],
                **({"errors": [{"probe": p, "error": e} for p, e in errors]} if errors else {}),
                **({"annotated": {p: str(o) for p, o in annotated.items()}} if annotated else {}),
            }
        )
    else:
        for r in results:
            policy = (
                f" (FPIR {r.fpir:g} for {r.gallery_people} people / {r.gallery_templates} templates)"
                if r.fpir is not None
                else " (fixed)"
            )
            print(
                f"{printable(r.probe)}: {len(r.faces)} face(s), threshold {r.threshold:.4f}{policy}, margin {r.margin:g}"
            )
            for i, face in enumerate(r.faces):
                box = "(" + ", ".join(f"{v:.0f}" for v in face.box) + ")"
                score = f"{face.similarity:.4f}" if face.similarity is not None else "-"
                others = ", ".join(f"{c.person} {c.similarity:.4f}" for c in face.candidates[1:])
                print(f"  [{i}] {box}: {face.name} ({score})" + (f"  next: {others}" if others else ""))
            for note in r.notes:
                print(f"  note: {printable(note)}")
        for probe, out in annotated.items():
            print(f"annotated {printable(probe)} -> {printable(out)}")
    for _, message in errors:
        print(f"siamface: error: {printable(message)}", file=sys.stderr)
    if errors:
        return EXIT_ERROR
    return EXIT_OK if all(r.found for r in results) else EXIT_NO


def _outputs(out: str, probes: list[str]) -> dict[str, Path]:
    """Where each probe's annotated copy goes: `out` itself for one probe, else a file in folder `out`."""
    from ..image import SAVED_FORMATS

    target = Path(out)
    if len(probes) == 1 and not target.is_dir():
        if target.suffix.lower() not in SAVED_FORMATS:
            raise ConfigError(f"--out {out}: give an image file name ({', '.join(SAVED_FORMATS)}) or a folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        return {probes[0]: target}
    if target.exists() and not target.is_dir():
        raise ConfigError(f"--out {out}: several probes need a folder, and this is a file")
    from ..gallery.exchange import private_folder

    os.close(private_folder(target, empty=False, what="identify --out"))  # named faces: 0700, this user's, no link
    names: dict[str, Path] = {}
    for i, probe in enumerate(probes):
        stem = Path(probe).stem or f"probe{i}"
        path = target / f"{stem}.png"
        if path in names.values():
            path = target / f"{stem}-{i}.png"
        names[probe] = path
    return names


def _annotate(probe: str, result, out: Path) -> None:
    """Draw each face's box, name and score: green known, yellow ambiguous, red unknown."""
    import numpy as np

    from ..draw import GREEN, RED, YELLOW, draw_faces
    from ..image import load_image, save_image
    from ..types import Faces

    image = load_image(probe)
    faces = Faces(
        boxes=np.array([f.box for f in result.faces], np.float32).reshape(-1, 4),
        scores=np.array([f.similarity or 0.0 for f in result.faces], np.float32),
    )
    labels, colors = [], []
    for f in result.faces:
        score = f" {f.similarity:.3f}" if f.similarity is not None else ""
        if f.status == "known":
            labels.append(f"{f.person}{score}")
            colors.append(GREEN)
        elif f.status == "ambiguous":
            labels.append(f"? {'/'.join(c.person for c in f.candidates[:2])}{score}")
            colors.append(YELLOW)
        else:
            labels.append(f"unknown{score}")
            colors.append(RED)
    save_image(draw_faces(image, faces, labels, colors), out)
