"""`magicvideo generate`: the cascade in a run directory that a crash does not lose (--resume)."""

from __future__ import annotations

import argparse

from magicvideo.cli.common import add_fit, add_lora, add_placement, placement
from magicvideo.cli.runs import CACHE_FLAGS, CONTEXT_FLAGS, RUN_FLAGS, STAGE_FLAGS, new_run
from magicvideo.media import FLAVOURS
from magicvideo.presets import PRESETS
from magicvideo.settings import I2VSettings, add_flags


def run_generate(args: argparse.Namespace) -> None:
    from pathlib import Path

    from magicvideo.pipeline import STAGES, MagicVideoPipeline, default_run_dir
    from magicvideo.runlock import RunLock

    progress = not args.quiet
    if args.resume:
        if args.prompt is not None or args.prompts:
            raise ValueError("give a prompt or --resume RUN_DIR, not both (a resumed run keeps its own settings)")
        from magicvideo.cli import build_parser

        defaults = vars(build_parser().parse_args(["generate", "--resume", args.resume]))
        given = [k for k in RUN_FLAGS if getattr(args, k) != defaults[k]]
        if given:
            raise ValueError(f"--resume keeps the run's own settings; leave out --{given[0].replace('_', '-')}")
        out = MagicVideoPipeline.resume(args.resume, progress=progress, placement=placement(args))
    elif args.prompts:
        from magicvideo.cli.batch import run_batch

        run_batch(args)
        return
    else:
        run, files, where = new_run(args)
        run_dir = Path(args.out) if args.out else default_run_dir(run.prompt, args.seed)
        lock = RunLock.claim(run_dir)  # before any weight loads: of two runs on one --out, one fails now
        try:
            pipe = MagicVideoPipeline.from_preset(args.preset, run.weights, placement=where, loras=files)
        except BaseException:
            lock.release(abandon=True)
            raise
        out = pipe.run(run, run_dir, progress=progress, lock=lock)
    last = [name for name in STAGES if name in out.paths][-1]
    print(f"video: {out.paths[last]}" + (f" (and {out.paths['gif']})" if "gif" in out.paths else ""))
    print(f"run directory: {out.run_dir}")


def add_parsers(sub) -> None:
    p = sub.add_parser("generate", help="the cascade: a prompt becomes a smooth video (t2i, i2v, v2v, vfi)")
    p.add_argument("prompt", nargs="?", help="what the video shows (not needed with --resume or --prompts)")
    p.add_argument("--prompts", metavar="FILE", help="many runs: a prompt a line (.txt), or JSON lines (.jsonl) "
                   "of {\"prompt\": ..., \"seed\": ..., other flags by name}; one run folder each under --out, "
                   "and an index; a re-run skips finished runs and resumes unfinished ones; under torchrun or "
                   "`accelerate launch` the prompts are shared among the processes")
    p.add_argument("--prompt-schedule", metavar="SCHEDULE", help="prompt travel for the keyframes: "
                   "'0: a red star moving left | 24: a red star spinning' (or a .json file of frame: prompt), "
                   "interpolated between the frames named; the reference image is made from the prompt (default: "
                   "frame 0's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="run directory (default: runs/<prompt words>-seed<seed>); with --prompts, the "
                   "folder of the runs (default: runs/<file name>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="finish an interrupted run; its finished stages are kept")
    p.add_argument("--image", help="animate this reference image instead of making one (skips t2i)")
    add_fit(p)
    p.add_argument("--stages", help="comma-separated stages to run, in order, e.g. t2i,i2v to stop early "
                   "(default: t2i,i2v,v2v,vfi)")
    p.add_argument("--frames", type=int, help="keyframes (default: stage 2's, 16 on both presets: 46 frames "
                   "after interpolation; beyond the motion modules' length, in context windows)")
    p.add_argument("--seconds", type=float, help="the video's length instead of --frames: keyframes = seconds x "
                   "their rate (stage 2's, 8 fps) + 1")
    p.add_argument("--fps", type=float, help="the final video's rate, any (interpolation makes the frames it "
                   "needs; the length is kept); instead of --times")
    p.add_argument("--times", type=int, help="interpolation's factor: times - 1 new frames in every gap "
                   "(default 3: 8 fps keyframes become 24 fps)")
    p.add_argument("--width", type=int, help="the video's width, with --height (full size: multiples of 64 for "
                   "sd15's keyframes at half); stages 1-2 keep the ratio of their sides (default: each stage's square)")
    p.add_argument("--height", type=int, help="the video's height, with --width")
    add_flags(p, I2VSettings, CONTEXT_FLAGS, what="stages 2 and 3's")
    add_flags(p, I2VSettings, CACHE_FLAGS, what="stages 1-3's")
    for prefix, cls, names, what in STAGE_FLAGS:
        add_flags(p, cls, names, prefix=prefix, what=what)
    p.add_argument("--gif", action="store_true", help="also write final.gif")
    p.add_argument("--preset", choices=PRESETS, default="tiny")
    p.add_argument("--weights", help="tiny: a folder holding any of t2i/, i2v/, v2v/, vfi/ to use instead of the "
                   "shipped; sd15: the weights folder (layout in docs/sd15.md)")
    add_lora(p, "stages 1 and 2 (and 3, which shares stage 2's UNet)")
    add_placement(p)
    p.add_argument("--flavour", choices=tuple(FLAVOURS), default="web",
                   help="web (yuv420p, plays anywhere; default) or measure (yuv444p)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_generate)
