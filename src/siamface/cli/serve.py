"""The service's sub-commands of `siamface`:

    siamface serve --gallery G [--host 127.0.0.1] [--port 8000] [--liveness off|passive|active|both]
                   [--camera colour|grey] [--liveness-model FILE]
                   [--challenge-seconds 20] [--session-seconds 60] [--max-frame-gap 1.5] [--workers N]
                   [--max-upload-mb 10] [--max-inflight-mb 256] [--allowed-host NAME] [--max-pixels N] [--lockout-failures 5] [--lockout-window S]
                   [--lockout-seconds S] [--keep-images] [--tls-cert PEM --tls-key PEM]
                   [--max-faces 20] [--time-budget 30] [--header-timeout 10] [--body-timeout 60]
                   [--max-connections 1000] [--keep-alive 5] [--access-log] [--library DIR]
                   [--additions-per-person 5] [--additions-window 86400]
                   [--decisions-per-minute 240] [--allow-empty]
    siamface keys create --gallery G [--name LABEL] [--role recognise|enrol|admin] | list | revoke ID
                                                                                (each with --json)

The keys live in ``<gallery>.keys.json`` (hashed); a running server sees new and revoked keys at once. A key's
role says what it may do (`siamface.service.keys`); `create` makes a recognise key unless told otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

from ..decision import LIVENESS_MODES
from ..errors import ConfigError
from ..service.keys import DEFAULT_ROLE, LEGACY_ROLE, ROLES
from ._common import (
    EXIT_OK,
    add_camera_options,
    add_chain_options,
    add_fpir_option,
    add_gallery_option,
    add_lockout_options,
    require_folder,
)


def add_parsers(sub) -> None:
    """Add `serve` and `keys` to the `siamface` parser."""
    p = sub.add_parser(
        "serve",
        help="run the HTTP API and the web page over a gallery",
        description="Serve a gallery over HTTP: POST /v1/verify, /v1/identify, /v1/people (enroll), "
        "/v1/people/{name}/faces, /v1/liveness/sessions, /v1/liveness/sessions/{id}/frames; "
        "POST /v1/embed (admin keys); GET/PATCH/DELETE /v1/people/{name}; GET /v1/people, /v1/health, /v1/whoami; "
        "the photo library under /v1/library. "
        "Every route but /v1/health needs an API key (siamface keys create). The web page (camera "
        "enrollment, live identification and verification) is at /, the OpenAPI docs at /docs. "
        "Models load once, at start-up; the gallery is created when it does not exist (in an existing folder, "
        "and only when an API key exists already, unless --allow-empty). Plain HTTP "
        "unless --tls-cert/--tls-key: keep the default 127.0.0.1, or put a TLS proxy in front.",
    )
    _gallery_and_keys(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="inference threads running at once (default: CPU cores, at most 4)",
    )
    p.add_argument(
        "--liveness",
        choices=LIVENESS_MODES,
        default="passive",
        help="every mode but off grants a claim only through a capture session from a camera (POST "
        "/v1/liveness/sessions, then frames at camera rate), never for an uploaded image. passive "
        "(default): the passive check on every frame. active: prompts (turn, tilt, come closer) "
        "revealed one at a time at random moments. both: prompts and the passive check, for "
        "unlocking. off: no check, for deployments that match uploaded photos (ID photos, archives)",
    )
    add_camera_options(p)
    p.add_argument(
        "--challenge-seconds",
        type=float,
        default=20.0,
        metavar="S",
        help="a capture session must finish within S seconds of its first frame (default: 20)",
    )
    p.add_argument(
        "--session-seconds",
        type=float,
        default=60.0,
        metavar="S",
        help="a session's life, from its opening to its use by /v1/verify (default: 60)",
    )
    p.add_argument(
        "--max-frame-gap",
        type=float,
        default=1.5,
        metavar="S",
        help="a session fails when two of its frames arrive more than S seconds apart (default: 1.5; "
        "raise it for a slow server or network)",
    )
    # Tests only: the same challenges for every session, instead of a random draw (a recording of the
    # known order would pass): hidden from --help.
    p.add_argument("--liveness-challenges", metavar="LIST", help=argparse.SUPPRESS)
    p.add_argument(
        "--max-upload-mb",
        type=float,
        default=10.0,
        metavar="MB",
        help="largest request body (default: 10 MB; 413 above)",
    )
    p.add_argument(
        "--max-inflight-mb",
        type=float,
        default=256.0,
        metavar="MB",
        help="request bodies received and held at once, all clients together (default: 256 MB; 503 "
        "server-busy with Retry-After above): many slow uploads cannot hold unbounded memory",
    )
    p.add_argument(
        "--allowed-host",
        action="append",
        metavar="NAME",
        help="a name clients address this server by (the Host header; repeat for several; '*': any). Default: "
        "localhost, 127.0.0.1 and ::1 when listening on one of them (a web page of another site whose name "
        "points here, DNS rebinding, is refused), else any",
    )
    p.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        metavar="N",
        help="largest decoded image in pixels (default: 24 million; 400 above)",
    )
    p.add_argument(
        "--max-faces",
        type=int,
        default=20,
        metavar="N",
        help="faces of one image identified by /v1/identify: the N largest; the answer says how many were "
        "found and 'truncated' (default: 20)",
    )
    p.add_argument(
        "--max-batch-images",
        type=int,
        default=16,
        metavar="N",
        help="images one batch request may carry (/v1/identify's field 'images', /v1/embed), each answered on "
        "its own; more: 413 too-many-images (default: 16)",
    )
    p.add_argument(
        "--time-budget",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds one request's work may take, waiting for a worker included (default: 30; 503 "
        "over-time-budget past it, nothing decided)",
    )
    p.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds a client has to send a request's headers before the connection is closed (default: 10)",
    )
    p.add_argument(
        "--body-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds a client has to send a request's body (default: 60; 408 body-timeout past it)",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=1000,
        metavar="N",
        help="connections open at once; more are answered 503 and closed (default: 1000, lowered to fit "
        "the file limit)",
    )
    p.add_argument(
        "--keep-alive",
        type=float,
        default=5.0,
        metavar="S",
        help="seconds an idle keep-alive connection stays open (default: 5)",
    )
    p.add_argument(
        "--additions-per-person",
        type=int,
        default=5,
        metavar="N",
        help="faces that keys below admin may add to one person ... (default: 5; 0: none; 429 above)",
    )
    p.add_argument(
        "--additions-window",
        type=float,
        default=86400.0,
        metavar="S",
        help="... within S seconds (default: 86400, a day)",
    )
    p.add_argument(
        "--decisions-per-minute",
        type=int,
        default=240,
        metavar="N",
        help="verifications and identified faces one API key below admin may ask for a minute, a "
        "bucket refilled continuously (default: 240; 0: not counted; 429 too-many-decisions above): a stolen "
        "door key cannot query the gallery faster",
    )
    add_lockout_options(p, meanwhile="429")
    p.add_argument(
        "--min-size",
        type=int,
        default=60,
        metavar="PX",
        help="enrollment: reject faces whose box is smaller than PX pixels (default: 60)",
    )
    p.add_argument(
        "--keep-images",
        action="store_true",
        help="when the server creates the gallery: keep a face crop with each template (stored "
        "unencrypted). Otherwise no uploaded image is stored",
    )
    p.add_argument(
        "--library",
        metavar="DIR",
        help="the one folder whose photos the page's photo library may read (subfolders too; links are not "
        "followed); clients (enrol keys) can see its faces grouped by person and name a group. Without it "
        "the library holds uploaded photos only",
    )
    p.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS with this certificate (with --tls-key)")
    p.add_argument("--tls-key", metavar="PEM", help="the certificate's private key")
    p.add_argument("--access-log", action="store_true", help="log every request (off: paths name people)")
    p.add_argument(
        "--allow-empty",
        action="store_true",
        help="start even when there is no gallery and no API key yet (refused otherwise: such a server answers "
        "nothing); the gallery is created empty, keys made later with `siamface keys create` are taken at once",
    )
    add_fpir_option(p)
    add_chain_options(p, threshold=True, gallery=True, json_flag=False)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "keys",
        help="create, list, revoke the API keys of a served gallery",
        description="API keys for `siamface serve`, stored hashed (SHA-256, per-key salt) in "
        "<gallery>.keys.json. A key is shown once, when created. Each key has a role: recognise (verify, "
        "identify, liveness sessions), enrol (also create people, add faces that match them, list them), "
        "admin (also forced additions and enrolments, rename, metadata, remove). A key made before roles "
        "existed is an enrol key.",
    )
    ksub = p.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    q = ksub.add_parser("create", help="make a new key and print it (once)")
    _gallery_and_keys(q)
    q.add_argument("--name", default="", help="a label for the key (who or what uses it)")
    q.add_argument(
        "--role",
        choices=ROLES,
        default=DEFAULT_ROLE,
        help=f"what the key may do (default: {DEFAULT_ROLE}, the least: a door or kiosk that only "
        "recognises; enrol for an enrolment desk; admin for whoever manages the people)",
    )
    q.add_argument("--json", action="store_true", help="print JSON instead of text")
    q.set_defaults(func=cmd_keys_create)
    q = ksub.add_parser("list", help="the keys (ids, roles, labels, dates; never the secrets)")
    _gallery_and_keys(q)
    q.add_argument("--json", action="store_true", help="print JSON instead of text")
    q.set_defaults(func=cmd_keys_list)
    q = ksub.add_parser("revoke", help="revoke a key (a running server refuses it at once)")
    _gallery_and_keys(q)
    q.add_argument("key_id", metavar="ID", help="the key's id (from `keys list`)")
    q.add_argument("--json", action="store_true", help="print JSON instead of text")
    q.set_defaults(func=cmd_keys_revoke)


def _gallery_and_keys(p: argparse.ArgumentParser) -> None:
    add_gallery_option(p)
    p.add_argument(
        "--keys",
        metavar="FILE",
        default=os.environ.get("SIAMFACE_KEYS"),
        help="the API keys file (default: <gallery>.keys.json beside a gallery file; required for a "
        "postgresql:// gallery, one file shared by its servers; or set $SIAMFACE_KEYS)",
    )


def _keys(args, writing: bool = False):
    """The keys file of the command's gallery (or --keys). `writing` (create, revoke): its folder must exist
    (`require_folder`): a mistyped --gallery made a new folder and a keys file for a gallery nobody serves."""
    from ..service.keys import KeyStore, keys_file_for

    path = args.keys or keys_file_for(args.gallery)
    if writing:
        option, named = ("--keys", args.keys) if args.keys else ("--gallery", args.gallery)
        require_folder(named, option, "check the path, or create the folder first")
    return KeyStore(path)


def _audit_key(args, kind: str, record) -> None:
    """A key created or revoked, in the gallery's audit (when the gallery exists and can be written)."""
    from ..errors import SiamfaceError
    from ..gallery.backends import gallery_exists, open_store

    if not args.gallery or not gallery_exists(args.gallery):
        return
    try:
        with open_store(args.gallery) as store:
            store.audit_event(kind, key=record.id, role=record.role)
    except SiamfaceError as exc:
        print(f"siamface: note: not written to the gallery's audit ({exc})", file=sys.stderr)


def cmd_keys_create(args) -> int:
    store = _keys(args, writing=True)
    record, key = store.create(args.name, args.role)
    _audit_key(args, "key-create", record)
    if args.json:
        print(json.dumps({**record.public(), "key": key, "file": str(store.path)}, indent=2))
    else:
        print(key)
        print(
            f"{record.role} key {record.id} created in {store.path}; it is shown only now: keep it secret. Send it as "
            f"'Authorization: Bearer KEY' or 'X-API-Key: KEY'.",
            file=sys.stderr,
        )
    return EXIT_OK


def cmd_keys_list(args) -> int:
    keys = _keys(args).list()
    if args.json:
        print(json.dumps({"keys": [k.public() for k in keys]}, indent=2))
    else:
        for k in keys:
            state = f"revoked {k.revoked}" if k.revoked else "active"
            role = f"{k.role} (made before roles)" if k.legacy else k.role
            print(f"{k.id}\t{role}\t{state}\tcreated {k.created}\t{k.name}")
        print(f"{len(keys)} key(s), {sum(k.active for k in keys)} active")
    return EXIT_OK


def cmd_keys_revoke(args) -> int:
    record = _keys(args, writing=True).revoke(args.key_id)
    _audit_key(args, "key-revoke", record)
    if args.json:
        print(json.dumps(record.public(), indent=2))
    else:
        print(f"key {record.id} revoked ({record.revoked})")
    return EXIT_OK


def cmd_serve(args) -> int:
    try:
        import uvicorn

        from ..service import logs
        from ..service.app import create_app
        from ..service.transport import uvicorn_options
    except ImportError as exc:
        raise ConfigError(
            f"siamface serve needs the service extra ({exc.name} is missing): pip install 'siamface[service]'"
        ) from None
    from ..service.settings import MAX_PIXELS, Settings
    from ..service.state import Service

    if not 0 < args.port < 65536:
        raise ConfigError(f"--port must be 1-65535, got {args.port}")
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ConfigError("--tls-cert and --tls-key go together")
    options = {}
    if args.workers is not None:
        options["workers"] = args.workers
    settings = Settings(
        gallery=args.gallery,
        keys_file=args.keys,
        detector=args.detector,
        model=args.model,
        min_face=args.min_face,
        upsample=args.upsample,
        refine_keypoints=args.refine_keypoints,
        device=args.device,
        threshold=args.threshold,
        fpir=args.fpir,
        min_enroll_face=args.min_size,
        keep_images=args.keep_images,
        liveness=args.liveness,
        camera=args.camera,
        liveness_model=args.liveness_model,
        challenge_s=args.challenge_seconds,
        session_ttl_s=args.session_seconds,
        max_frame_gap_s=args.max_frame_gap,
        challenges=tuple(args.liveness_challenges.split(",")) if args.liveness_challenges else None,
        max_upload_bytes=_upload_bytes(args.max_upload_mb),
        max_inflight_bytes=_upload_bytes(args.max_inflight_mb, "--max-inflight-mb"),
        allowed_hosts=_allowed_hosts(args.allowed_host, args.host),
        max_pixels=args.max_pixels if args.max_pixels is not None else MAX_PIXELS,
        lockout_failures=args.lockout_failures,
        lockout_window_s=args.lockout_window,
        lockout_s=args.lockout_seconds,
        max_faces=args.max_faces,
        max_batch_images=args.max_batch_images,
        time_budget_s=args.time_budget,
        header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout,
        max_connections=args.max_connections,
        keep_alive_s=args.keep_alive,
        additions_per_person=args.additions_per_person,
        additions_window_s=args.additions_window,
        decisions_per_minute=args.decisions_per_minute,
        library=args.library,
        **options,
    )
    _refuse_nothing_to_serve(args, settings)
    service = Service(settings)
    service.open()  # models and gallery before listening: a bad gallery or model fails here, plainly
    try:
        if service.created_gallery:
            print(f"siamface: created gallery {settings.gallery}", file=sys.stderr)
        if service.model_note:
            print(f"siamface: note: {service.model_note}", file=sys.stderr)
        for warning in service.warnings:
            print(f"siamface: warning: {warning}", file=sys.stderr)
        if service.keys.count_active() == 0:
            print(
                f"siamface: warning: no API key yet; every request but /v1/health will be refused. Create "
                f"one with: siamface keys create --gallery {args.gallery}",
                file=sys.stderr,
            )
        legacy = [k.id for k in service.keys.list() if k.active and k.legacy]
        if legacy:
            print(
                f"siamface: warning: {len(legacy)} key(s) made before roles existed ({', '.join(legacy[:5])}) "
                f"may {LEGACY_ROLE}: replace each with a key of the least role it needs (siamface keys create "
                "--role recognise|enrol|admin, then keys revoke ID)",
                file=sys.stderr,
            )
        if settings.challenges:
            print(
                f"siamface: warning: every liveness session prompts {','.join(settings.challenges)} (meant for "
                "tests: a recording of a known challenge passes it)",
                file=sys.stderr,
            )
        if args.host not in LOOPBACK and not args.tls_cert:
            print(
                f"siamface: warning: listening on {args.host} over plain HTTP: API keys and faces cross "
                "the network unencrypted; use --tls-cert/--tls-key or a TLS proxy",
                file=sys.stderr,
            )
        if settings.allowed_hosts is None and not args.allowed_host:
            print(
                f"siamface: note: listening on {args.host}, any Host name is answered; name this server's own "
                "with --allowed-host NAME (a site whose name points here is then refused)",
                file=sys.stderr,
            )
        scheme = "https" if args.tls_cert else "http"
        from ..gallery.postgres import redact

        shown = settings.gallery if isinstance(settings.gallery, str) else settings.gallery.name
        print(
            f"siamface: serving {redact(shown)} on {scheme}://{args.host}:{args.port} "
            f"(page /, API docs /docs); Ctrl-C stops",
            file=sys.stderr,
            flush=True,
        )
        app = create_app(settings, service)
        transport, note = uvicorn_options(settings)
        if note:
            print(f"siamface: note: {note}", file=sys.stderr)
        limit = logs.configure(args.debug, args.access_log)
        _exit_on_sigterm()
        try:
            uvicorn.run(
                app,
                host=args.host,
                port=args.port,
                log_config=None,  # logs.configure: rate-limited, the access log's query secrets redacted
                log_level=None,
                access_log=args.access_log,
                server_header=False,
                proxy_headers=False,
                ssl_certfile=args.tls_cert,
                ssl_keyfile=args.tls_key,
                **transport,
            )
        finally:
            logs.unconfigure(limit)
    finally:
        service.close()
    return EXIT_OK


def _refuse_nothing_to_serve(args, settings) -> None:
    """ConfigError (exit 2) before any model loads when the server could answer nothing: the folder of the
    gallery or of the keys file does not exist (a typo: nothing is created there), or there is neither a
    gallery nor an active API key yet (every request but /v1/health would be refused, on a gallery nobody
    made), unless --allow-empty asks for that server."""
    from ..gallery.postgres import redact

    require_folder(settings.gallery, "--gallery", "check the path, or create the folder first")
    require_folder(settings.keys_file, "--keys", "check the path, or create the folder first")
    if args.allow_empty:
        return
    from ..gallery.backends import gallery_exists
    from ..service.keys import KeyStore

    if KeyStore(settings.keys_file).count_active() or gallery_exists(settings.gallery):
        return
    shown = redact(str(settings.gallery))
    raise ConfigError(
        f"no gallery at {shown} and no API key in {settings.keys_file}: the server would refuse every request. "
        f"Create a key first (siamface keys create --gallery {shown} --role admin) and enrol through the API, or "
        f"enrol with siamface enroll --gallery {shown} NAME IMAGE...; --allow-empty starts it as it is"
    )


def _exit_on_sigterm() -> None:
    """Make SIGTERM, which uvicorn re-raises once it has stopped serving, leave through `cmd_serve`'s cleanup
    (the log's last counts, the gallery closed) instead of killing the process on the spot."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return  # not the process's main thread (tests): its signals are not ours

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def _upload_bytes(mb: float, option: str = "--max-upload-mb") -> int:
    """A size in MB in bytes; a one-line error for NaN or infinity (int() of them is a traceback)."""
    if not math.isfinite(mb):
        raise ConfigError(f"{option} must be a finite number, got {mb}")
    return int(mb * 1024 * 1024)


#: The names of this machine a server listening on one of them answers by default (`--allowed-host`).
LOOPBACK = ("localhost", "127.0.0.1", "::1")


def _allowed_hosts(given: list[str] | None, host: str) -> tuple[str, ...] | None:
    """The Host names the server answers: those `given` (None for '*': any); by default the loopback names when
    it listens on one of them (a browser's page of another site resolved to 127.0.0.1 names its own site),
    else any."""
    if given:
        return None if "*" in given else tuple(given)
    return LOOPBACK if host.lower().strip("[]") in LOOPBACK else None
