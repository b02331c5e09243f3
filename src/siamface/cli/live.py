"""`siamface watch` and `siamface authenticate`: the real-time commands (see `siamface.live`).

Events are JSON lines on stdout (one per person appearing, being re-identified or leaving; one grant or
deny); a summary (frames, fps, latency) goes to stderr, and with --json also as a last "summary" event. Exit codes: watch 0 (or 2 on error); authenticate
0 granted, 1 denied, 2 error; either 130 when stopped (SIGTERM, Ctrl-C) while stdout was not being read, its last
events dropped after `STOP_GRACE_S` seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import sys
import threading
import time

from ..decision import LIVENESS_MODES
from ..errors import ConfigError
from ._common import (
    add_camera_options,
    add_chain_options,
    add_fpir_option,
    add_gallery_option,
    add_lockout_options,
    add_margin_option,
    open_gallery,
    pipeline_from_args,
    silence_stdout,
)

EXIT_GRANTED, EXIT_DENIED = 0, 1


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "watch",
        help="name the people in a video, camera or stream live (1:N against a gallery)",
        description="Track every face of a video source and name it from the gallery (or 'unknown'). "
        "Detection runs on every frame, recognition on new tracks and every --refresh frames, "
        "names are voted over the track. JSON-lines events on stdout.",
    )
    _source_options(p)
    p.add_argument(
        "--refresh",
        type=int,
        default=10,
        metavar="N",
        help="re-embed a tracked face every N frames processed, at most one face in N a frame (default 10)",
    )
    p.add_argument(
        "--votes",
        type=int,
        default=5,
        metavar="N",
        help="a track's name is the vote of its last N recognitions (default 5)",
    )
    add_margin_option(p)
    add_fpir_option(p)
    p.add_argument(
        "--liveness",
        choices=("off", "passive"),
        default="off",
        help="off (default): name every face; passive: each tracked face is a passive capture session, as in "
        "authenticate (camera rate, no repeated picture, the passive check on every frame, a 3-D movement), "
        "and is named only once it passed ('checking' until then, 'not-live' after a failed session; a "
        "'liveness' event per decided session; a track whose face becomes another person's starts again)",
    )
    add_camera_options(p)
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser(
        "authenticate",
        help="unlock for a claimed person in front of the camera (1:1 against a gallery)",
        description="Verify the largest face of each frame against the claimed person's templates: grant as "
        "soon as --consecutive frames in a row verify, deny at --timeout. Exit code 0 granted, "
        "1 denied, 2 error. A video file or a folder of frames is a recording, which shows no one at a camera "
        "whatever its liveness: its decision says so (\"recorded\": true; audit rule live-recording).",
    )
    _source_options(p)
    p.add_argument("--claim", required=True, metavar="NAME", help="the person to authenticate")
    p.add_argument(
        "--timeout",
        type=float,
        default=20.0,
        metavar="S",
        help="deny after S seconds (default 20: an active session's 3 prompts, each after a random hold, take 5-15 s)",
    )
    p.add_argument(
        "--consecutive", type=int, default=3, metavar="N", help="frames in a row that must verify (default 3)"
    )
    p.add_argument(
        "--liveness",
        choices=LIVENESS_MODES,
        default="passive",
        help="presentation-attack checks over the frames, as a capture session (camera rate, no repeated "
        "picture, no jump): passive (the passive check on every frame), active (prompts revealed one at "
        "a time at random moments, with a parallax test; prompts are 'challenge' events), both, or off "
        "(default: passive)",
    )
    add_camera_options(p)
    add_lockout_options(p, meanwhile="the claim is denied at once, not counted as an attempt")
    p.set_defaults(func=cmd_authenticate)


def _source_options(p: argparse.ArgumentParser) -> None:
    add_gallery_option(p)
    p.add_argument(
        "--source",
        default="0",
        help="camera index, video file, stream URL (rtsp://, http://) or folder of frames (default 0)",
    )
    p.add_argument(
        "--realtime",
        action="store_true",
        help="play a video file at its own frame rate, dropping frames when behind, as a camera "
        "would (default: every frame of a file)",
    )
    p.add_argument("--out", metavar="FILE", help="write the annotated video here (.mp4, .avi, .mov, .mkv or .m4v)")
    p.add_argument("--show", action="store_true", help="show the annotated video in a window (needs a display)")
    p.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop after N frames")
    add_chain_options(p, threshold=True, gallery=True)


def _open(args):
    from ..live import GalleryMatcher, VideoOut
    from ..video import LatestFrameReader, open_source

    if args.max_frames is not None and args.max_frames < 1:  # 0 and -1 processed a frame
        raise ConfigError(f"--max-frames must be >= 1, got {args.max_frames}")
    if (
        args.out
        and os.path.exists(args.out)
        and os.path.exists(args.source)
        and os.path.samefile(args.out, args.source)
    ):
        raise ConfigError(f"--out {args.out} is the --source video: writing the annotated video would destroy it")
    pipeline = pipeline_from_args(args, gallery=args.gallery)
    gallery = open_gallery(args, pipeline)
    matcher = GalleryMatcher(
        gallery, threshold=args.threshold, margin=getattr(args, "margin", None), fpir=getattr(args, "fpir", None)
    )
    source = open_source(args.source)
    out = VideoOut(args.out, source.fps, show=args.show) if (args.out or args.show) else None
    reader = LatestFrameReader(source, realtime=args.realtime, max_frames=args.max_frames)
    return gallery, pipeline, matcher, reader, out


def _summary(command: str, stats, extra: str = "", as_json: bool = False) -> None:
    """The run's figures: a line on stderr, and with --json also a final "summary" event on stdout."""
    s = stats.to_dict()
    if as_json:
        print(json.dumps({"event": "summary", "command": command, **s}), flush=True)
    print(
        f"{command}: {s['frames']} frames at {s['fps']} fps, {s['dropped']} dropped, "
        f"{s['faces_embedded']} faces embedded, latency p50 {s['latency_ms_p50']} ms / "
        f"p99 {s['latency_ms_p99']} ms{extra}",
        file=sys.stderr,
    )


#: Seconds the run's last writes (the "left" events, the decision, the summary) may take after a stop.
STOP_GRACE_S = 5.0


class _Stalled(BaseException):
    """The run's last writes outlasted `STOP_GRACE_S` after a stop (stdout a pipe its reader stopped reading)."""


@contextlib.contextmanager
def _stoppable():
    """SIGTERM (a service manager stopping the command, `timeout`, `kill`) ends the run as Ctrl-C does: the
    last events and the summary written, the --out video finished (an .mp4 killed before its end has no index
    and cannot be played), an authentication's attempt audited. After a stop (either signal) those last writes
    get `STOP_GRACE_S` seconds: events to a pipe whose reader stopped reading blocked them, and the command
    with them, until a SIGKILL; past that what is left unwritten is dropped and the command ends (exit 130)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        signal.setitimer(signal.ITIMER_REAL, STOP_GRACE_S)
        raise KeyboardInterrupt

    def stalled(signum, frame):
        raise _Stalled

    handlers = {signal.SIGTERM: stop, signal.SIGALRM: stalled}
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where Ctrl-C is ignored (nohup, &)
        handlers[signal.SIGINT] = stop
    previous = {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}
    try:
        yield
    except _Stalled:
        silence_stdout()  # what is still buffered for stdout must not block the exit too
        print(
            f"siamface: stdout was not read for {STOP_GRACE_S:g} s after the stop: the last events were not written",
            file=sys.stderr,
        )
        raise KeyboardInterrupt from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def cmd_watch(args) -> int:
    from ..live import Watcher, json_lines, run

    gallery, pipeline, matcher, reader, out = _open(args)
    with gallery, reader, _stoppable():
        watcher = Watcher(
            pipeline,
            matcher,
            refresh=args.refresh,
            votes=args.votes,
            on_event=json_lines(sys.stdout),
            liveness=args.liveness,
            passive=_passive_check(args),
        )
        try:
            stats = run(reader, watcher, out, reader=reader)
        except KeyboardInterrupt:
            stats = watcher.stats
        _summary("watch", stats, as_json=args.json)
    return 0


def _passive_check(args):
    """The passive check `--liveness`, `--camera` and `--liveness-model` ask for (None: none)."""
    if args.liveness not in ("passive", "both"):
        return None
    from ..liveness import PassiveCheck

    return PassiveCheck(args.liveness_model, camera=args.camera)


def _lock_left(gallery, args) -> float:
    """Seconds left of the lock-out the audited denials of `args.claim` set (0: none), as `serve` counts them:
    --lockout-failures denials within --lockout-window seconds lock the person for --lockout-seconds, from
    every process that audits to this gallery (each authenticate, a server)."""
    from ..service.lockout import Lockout, audited_denial_ages

    lockout = Lockout(args.lockout_failures, args.lockout_window, args.lockout_seconds, clock=time.time)
    person = gallery.store.person(args.claim, metadata=False)
    reach = args.lockout_window + args.lockout_seconds
    return lockout.lock_left(audited_denial_ages(gallery.store, person.id, reach, time.time()))


def cmd_authenticate(args) -> int:
    from ..gallery.core import refuse_exposed
    from ..live import Authenticator, json_lines, run
    from ..live.authenticate import RECORDING
    from ..service.lockout import check_lockout

    check_lockout(args.lockout_failures, args.lockout_window, args.lockout_seconds)
    refuse_exposed(args.gallery, "before authenticating")  # a door: as `serve` refuses it
    gallery, pipeline, matcher, reader, out = _open(args)
    recorded = not reader.source.live  # a video file or a folder of frames: no one's presence at a camera
    with gallery, reader, _stoppable():
        auth = Authenticator(
            pipeline,
            matcher,
            args.claim,
            consecutive=args.consecutive,
            timeout=args.timeout,
            on_event=json_lines(sys.stdout),
            liveness=args.liveness,
            passive=_passive_check(args),
            recorded=recorded,
        )
        if recorded and args.liveness != "off":  # once the claim is known to be someone's
            print(
                f"siamface: note: --source {reader.source.name} is a recording: liveness {RECORDING}", file=sys.stderr
            )
        locked = _lock_left(gallery, args)
        try:
            try:
                if locked:  # as serve's 429: not an attempt, not counted (the lock would never end while tried)
                    auth.deny(
                        f"locked out: {args.lockout_failures} failed attempts within {args.lockout_window:g} s; "
                        f"retry in {math.ceil(locked)} s"
                    )
                else:
                    run(reader, auth, out, stop_when_decided=True, reader=reader)
            except KeyboardInterrupt:
                auth.finish()
        finally:  # audited even when its event could not be written (stdout not read) or the source failed
            decision = auth.decision
            rule = "live-recording" if recorded else "live"  # the audit tells a door's grant from a file's
            notes = (
                ()
                if decision is None or locked
                else matcher.log_claim(args.claim, decision.granted, decision.best_score, rule)
            )
        for note in notes:
            print(f"siamface: note: {note}", file=sys.stderr)
        _summary(
            "authenticate",
            auth.stats,
            f"; {'GRANTED' if decision.granted else 'DENIED'}: {decision.reason}",
            as_json=args.json,
        )
    return EXIT_GRANTED if decision.granted else EXIT_DENIED
