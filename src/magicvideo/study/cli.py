"""`magicvideo study new | stills | serve | invite | auto | report`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _new(args: argparse.Namespace) -> None:
    from magicvideo.study.build import media_dir, new_study

    db = new_study(args.db, args.system, args.prompts, args.pairs, args.seed, args.against, progress=not args.quiet)
    count = db.execute("SELECT COUNT(*) FROM pairs").fetchone()[0]
    print(f"study {args.db}: {count} pairs of {len(args.system)} systems; videos in {media_dir(args.db)}")


def _stills(args: argparse.Namespace) -> None:
    from magicvideo.study.stills import make_still_study, stills_dir

    db = make_still_study(args.db, args.weights, args.prompts, args.seeds, progress=not args.quiet)
    count = db.execute("SELECT COUNT(*) FROM pairs").fetchone()[0]
    print(f"study {args.db}: {count} pairs of stage-1 images, {args.seeds} seeds of {args.prompts} train prompts; "
          f"images in {stills_dir(args.db)}")


def _serve(args: argparse.Namespace) -> None:
    from magicvideo.study.server import serve

    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be 0..65535, got {args.port}")
    try:
        serve(args.db, args.host, args.port, open_join=not args.invite_only)
    except OSError as err:
        raise ValueError(f"cannot listen on {args.host}:{args.port}: {err.strerror or err}") from None


def _invite(args: argparse.Namespace) -> None:
    from magicvideo.study.db import add_invites, connect

    if args.count < 1:
        raise ValueError(f"--count must be at least 1, got {args.count}")
    print("\n".join(add_invites(connect(args.db), args.count)))


def _auto(args: argparse.Namespace) -> None:
    from magicvideo.study.auto import auto_rate
    from magicvideo.study.db import connect

    cast = auto_rate(connect(args.db), args.db, args.rater, progress=not args.quiet)
    print(f"rater {args.rater}: {cast} new vote{'s' if cast != 1 else ''}")


def _report(args: argparse.Namespace) -> None:
    from magicvideo.study.db import connect
    from magicvideo.study.report import build_report, markdown, plot

    if args.plot and Path(args.plot).suffix.lower() != ".png":
        raise ValueError(f"--plot must name a .png file, got {args.plot}")
    report = build_report(connect(args.db))
    if args.plot:
        plot(report, args.plot)
    print(json.dumps(report, indent=1) if args.json else "\n".join(markdown(report)))


def add_parser(sub) -> None:
    study = sub.add_parser("study", help="side-by-side studies of videos, as the paper's raters voted")
    commands = study.add_subparsers(dest="study_command", required=True,
                                    metavar="{new,stills,serve,invite,auto,report}")

    p = commands.add_parser("new", help="build the pairs of a study from each system's videos")
    p.add_argument("db", help="the study database to create (STUDY.db; its videos go to STUDY.media/)")
    p.add_argument("--system", action="append", required=True, metavar="NAME=RUNS_DIR",
                   help="a system and its videos: run folders as `generate` writes them, or video files named by "
                   "their prompt (give it twice or more)")
    p.add_argument("--prompts", help="a text file, one prompt a line: only these (default: every prompt all share)")
    p.add_argument("--pairs", type=int, help="at most this many pairs (default: all)")
    p.add_argument("--against", metavar="NAME", help="pair only this system with each other one (the paper's "
                   "'ours vs theirs'; default: every two systems)")
    p.add_argument("--seed", type=int, default=0, help="draws the sides and the order of the pairs")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_new)

    p = commands.add_parser("stills", help="a study of stage 1's images: train prompts at several seeds, every "
                            "two of a prompt paired (for `train preference`)")
    p.add_argument("db", help="the study database to create (its images go to STUDY.stills/)")
    p.add_argument("--weights", help="a stage-1 folder (default: the shipped tiny stage 1)")
    p.add_argument("--prompts", type=int, default=400, help="the first this many train prompts (world seed 0)")
    p.add_argument("--seeds", type=int, default=4, help="images per prompt (every two are a pair)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_stills)

    p = commands.add_parser("serve", help="the rating page, for people")
    p.add_argument("db")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--invite-only", action="store_true", help="raters need an invite (`study invite`)")
    p.set_defaults(func=_serve)

    p = commands.add_parser("invite", help="print invite tokens for raters")
    p.add_argument("db")
    p.add_argument("--count", type=int, default=1)
    p.set_defaults(func=_invite)

    p = commands.add_parser("auto", help="votes from an automatic rater")
    p.add_argument("db")
    p.add_argument("--rater", default="judge", help="judge: the judge's readings against world prompts")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_auto)

    p = commands.add_parser("report", help="G / S / B, (G+S)/(B+S), a Bradley-Terry ranking, agreement")
    p.add_argument("db")
    p.add_argument("--json", action="store_true", help="the whole report as JSON")
    p.add_argument("--plot", help="also draw the paper-style stacked bar chart to this .png")
    p.set_defaults(func=_report)
