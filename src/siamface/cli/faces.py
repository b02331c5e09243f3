"""The commands on image files alone, no gallery: verify (two images; with --claim it is the gallery's, see
`gallery.cmd_claim`), detect, embed, models.

    siamface verify A B [--json]          same person? exit 0 = same, 1 = different, 2 = error
    siamface detect IMAGE [--out PNG]     faces, boxes and landmarks
    siamface embed IMAGE --json           embeddings of every face
    siamface models                       the detectors and models available
"""

from __future__ import annotations

import json

from ..errors import ConfigError
from ._common import add_chain_options, pipeline_from_args

EXIT_SAME, EXIT_DIFFERENT = 0, 1


def add_parsers(sub) -> None:
    """Add verify, detect, embed and models to the `siamface` parser."""
    p = sub.add_parser(
        "verify",
        help="are the faces in two images the same person? (or: is this the person claimed?)",
        description="Compare the largest face of image A with the largest face of image B. With --gallery "
        "and --claim NAME, compare the largest face of one PROBE with every template of the "
        "enrolled person NAME instead, decided by --rule (best: highest similarity, mean: mean "
        "similarity, fraction: at least F of the templates match); the attempt is logged in the "
        "gallery's audit. Exit code: 0 same person / granted, 1 different / denied, 2 error "
        "(unreadable file, no face, unknown name).",
    )
    p.add_argument("a", metavar="A|PROBE", help="first image, or the probe with --claim")
    p.add_argument("b", metavar="B", nargs="?", help="second image (not with --claim)")
    p.add_argument(
        "--gallery",
        "-g",
        metavar="FILE|URL",
        default=None,
        help="with --claim: the gallery, an SQLite file or a postgresql:// URL (default: $SIAMFACE_GALLERY)",
    )
    p.add_argument("--claim", metavar="NAME", help="the claimed identity, checked against the gallery")
    p.add_argument(
        "--rule",
        choices=("best", "mean", "fraction"),
        default=None,
        help="with --claim: how template scores are combined (default: best)",
    )
    p.add_argument(
        "--fraction",
        type=float,
        default=None,
        metavar="F",
        help="with --rule fraction: share of the templates that must match (default: 0.5)",
    )
    add_chain_options(p, threshold=True, gallery=True)
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser(
        "detect",
        help="find faces and their landmarks",
        description="Find every face in an image, biggest first: box (x1 y1 x2 y2), score and "
        "5 landmarks. Exit code 0 when at least one face is found, 1 when none.",
    )
    p.add_argument("image", help="image path")
    p.add_argument(
        "--out", metavar="PNG", help="write a copy of the image with boxes and landmarks drawn (.png, .jpg, .webp, ...)"
    )
    add_chain_options(p)
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser(
        "embed",
        help="print the embedding of every face",
        description="Detect, align and embed every face of an image; print boxes and "
        "L2-normalised embeddings. Exit code 1 when no face is found.",
    )
    p.add_argument("image", help="image path")
    add_chain_options(p)
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser(
        "models",
        help="list the available detectors and models",
        description="List detectors and encoders with their input size and default threshold, and the "
        "liveness models, every model file shipped in the package with its source, licence and training data, "
        "and the device the networks run on (the ONNX Runtime providers).",
    )
    p.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default=None,
        help="the device to report on (default: $SIAMFACE_DEVICE, else cpu); cuda without a usable GPU: exit 2",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_models)


def cmd_verify(args) -> int:
    if args.claim is not None or args.gallery is not None:
        from .gallery import cmd_claim

        return cmd_claim(args)
    if args.b is None:
        raise ConfigError("verify takes two images A B, or one PROBE with --gallery G --claim NAME")
    if args.rule is not None or args.fraction is not None:
        raise ConfigError("--rule and --fraction apply to verify --claim NAME only")
    result = pipeline_from_args(args).verify(args.a, args.b)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        verdict = "SAME person" if result.same else "DIFFERENT people"
        print(
            f"{verdict}: similarity {result.similarity:.4f} "
            f"{'>=' if result.same else '<'} threshold {result.threshold:.4f}  "
            f"(distance {result.distance:.4f}, model {result.model}, detector {result.detector})"
        )
        print(f"  threshold: {result.threshold_source}")
        print(f"  a: {args.a}  face at {_box(result.box_a)}  ({result.faces_a} found)")
        print(f"  b: {args.b}  face at {_box(result.box_b)}  ({result.faces_b} found)")
        for note in result.notes:
            print(f"  note: {note}")
    return EXIT_SAME if result.same else EXIT_DIFFERENT


def cmd_detect(args) -> int:
    from ..draw import draw_faces
    from ..image import load_image, output_format, save_image

    if args.out:
        output_format(args.out)  # a name that cannot be written is refused before the models load
    pipe = pipeline_from_args(args)
    image = load_image(args.image)
    faces = pipe.detect(image)
    if args.out:
        save_image(draw_faces(image, faces), args.out)
    if args.json:
        print(
            json.dumps(
                {
                    "image": args.image,
                    "size": [image.shape[1], image.shape[0]],
                    "detector": faces.detector,
                    "faces": faces.to_list(),
                },
                indent=2,
            )
        )
    else:
        print(f"{args.image}: {len(faces)} face(s) found by {faces.detector} ({image.shape[1]}x{image.shape[0]})")
        for i, item in enumerate(faces.to_list()):
            print(f"  [{i}] box {_box(item['box'])}  score {item['score']:.3f}")
        if args.out:
            print(f"  annotated image written to {args.out}")
    return 0 if len(faces) else 1


def cmd_embed(args) -> int:
    pipe = pipeline_from_args(args)
    faces = pipe.embed(args.image)
    info = pipe.encoder.info
    payload = {
        "image": args.image,
        "model": info.name,
        "model_version": info.version,
        "detector": faces.detector,
        "faces": faces.to_list(),
    }
    if args.json:
        print(json.dumps(payload))
    else:
        print(f"{args.image}: {len(faces)} face(s), {info.embedding_size}-d embeddings from {info.name}")
        for i, item in enumerate(payload["faces"]):
            head = ", ".join(f"{v:.3f}" for v in item["embedding"][:6])
            print(f"  [{i}] box {_box(item['box'])}  [{head}, ...]")
    return 0 if len(faces) else 1


def cmd_models(args) -> int:
    from .._onnx import device_report, use_device
    from ..decision import resolve
    from ..detection import detector_names
    from ..embedding import create_encoder, model_names
    from ..pipeline import DEFAULT_DETECTOR, DEFAULT_MODEL

    use_device(args.device)
    device = device_report()
    models = []
    for name in model_names():
        enc = create_encoder(name)
        info = enc.info
        defaults = resolve(info)  # the model's own thresholds, by the one rule
        specs = getattr(enc, "chip_specs", None) or (info.chip,)
        parts = getattr(enc, "parts", None) or (enc,)
        flips = [bool(p.info.extra.get("flip")) for p in parts]
        crops = " + ".join(
            f"{c.size}x{c.size} RGB "
            + (
                "aligned on 5 landmarks"
                if c.crop == "landmarks"
                else "aligned on the detector's 5 keypoints (retinaface: found again for faces under 112 px; "
                "dlib's landmarks where it gives none)"
                if c.crop == "keypoints"
                else f"box crop, margin {c.margin:g}" + ("" if c.square else ", stretched")
            )
            + (", averaged with its mirror image" if flip else "")
            for c, flip in zip(specs, flips)
        )
        models.append(
            {
                "name": name,
                "default": name == DEFAULT_MODEL,
                "version": info.version,
                "embedding_size": info.embedding_size,
                "input": crops,
                "metric": info.metric,
                "threshold": defaults.verify.value,
                "threshold_source": defaults.verify.source,
                "identify_threshold": defaults.identify.value,
                "identify_threshold_source": defaults.identify.source,
                "identify_fpir": defaults.fpir.fpir if defaults.fpir is not None else None,
                "identify_threshold_by_templates": {
                    n: round(defaults.for_gallery(n, n).identify.value, 4) for n in (10, 1_000, 100_000)
                }
                if defaults.fpir is not None
                else None,
                "licence": "; ".join(dict.fromkeys(p.info.extra.get("licence", "") for p in parts)),
                "training_data": "; ".join(dict.fromkeys(p.info.extra.get("training data", "") for p in parts)),
            }
        )
    from ..liveness.combined import liveness_models
    from ..provenance import describe

    liveness, shipped = liveness_models(), describe()
    if args.json:
        payload = {"detectors": detector_names(), "default_detector": DEFAULT_DETECTOR, "models": models}
        print(json.dumps({**payload, "liveness": liveness, "shipped_files": shipped, "device": device}, indent=2))
    else:
        print("detectors: " + ", ".join(d + (" (default)" if d == DEFAULT_DETECTOR else "") for d in detector_names()))
        print("models:")
        for m in models:
            default = " (default)" if m["default"] else ""
            print(f"  {m['name']}{default}: {m['embedding_size']}-d, input {m['input']}, {m['metric']}")
            print(f"      threshold 1:1 {m['threshold']} ({m['threshold_source']})")
            if m["identify_fpir"] is not None:
                sizes = ", ".join(f"{n:,} templates {t}" for n, t in m["identify_threshold_by_templates"].items())
                print(f"      threshold 1:N by FPIR {m['identify_fpir']:g}, by gallery size: {sizes}")
            else:
                print(f"      threshold 1:N {m['identify_threshold']} ({m['identify_threshold_source']})")
            print(f"      licence: {m['licence']}; training data: {m['training_data']}")
        print("liveness models:")
        for m in liveness:
            threshold = f", threshold {m['threshold']:.4f}" if m.get("threshold") is not None else ""
            print(f"  {m['name']}: {m['role']}{threshold}\n      source: {m['source']}; licence: {m['licence']}")
        print("files shipped in the package (source; licence; training data):")
        for f in shipped:
            trained = "; ".join(f["training_data"]) or "none (no weights)"
            print(f"  {f['file']}\n      {f['source']}; licence: {f['licence']}; training data: {trained}")
        print(
            f"device: {device['device']}, networks run on {' then '.join(device['providers'])} "
            f"(onnxruntime offers {', '.join(device['available'])})"
        )
    return 0


def _box(box) -> str:
    return "(" + ", ".join(f"{v:.0f}" for v in box) + ")"
