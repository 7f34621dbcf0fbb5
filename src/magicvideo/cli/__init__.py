"""The `magicvideo` command, one module per command group: stages.py (t2i, i2v, v2v, interpolate),
generate.py (the cascade; runs.py reads a run's flags, batch.py a prompt file), sd15.py (the
full-size folder, assembled), lab.py (world, judge, training, weights tools) and the study's own
(magicvideo.study.cli). Each command checks its arguments and calls the library; a user error is
one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import sys

from safetensors import SafetensorError

from magicvideo import __version__
from magicvideo.cli import generate, lab, sd15, stages


def _quiet_libraries(quiet: bool) -> None:
    """diffusers' and transformers' own notices are about their internals, not the user's run;
    with --quiet their loading bars go too."""
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    if quiet:
        diffusers_logging.disable_progress_bar()
        transformers_logging.disable_progress_bar()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="magicvideo", description="MagicVideo-V2 text-to-video.")
    parser.add_argument("--version", action="version", version=f"magicvideo {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    stages.add_parsers(sub)
    generate.add_parsers(sub)
    lab.add_parsers(sub)
    sd15.add_parsers(sub)
    from magicvideo.study.cli import add_parser as add_study

    add_study(sub)
    return parser


def _one_line(err: object) -> str:
    """An error's message on one line (some libraries' messages span several)."""
    return " ".join(str(err).split())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.command in ("t2i", "i2v", "v2v", "generate", "random-weights", "train", "sd15"):
        _quiet_libraries(args.quiet)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError) as err:  # (every MagicVideoError is a ValueError)
        print(f"magicvideo {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except (OSError, SafetensorError) as err:  # a weights file missing or cut short, a full or read-only disk
        where = f" ({err.filename})" if getattr(err, "filename", None) else ""
        print(f"magicvideo {args.command}: error: {_one_line(err.strerror or err) if isinstance(err, OSError) else err}"
              f"{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"magicvideo {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0

