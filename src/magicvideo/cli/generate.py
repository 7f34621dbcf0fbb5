"""`magicvideo generate`: the cascade in a run directory that a crash does not lose (--resume)."""

from __future__ import annotations

import argparse
import sys

from magicvideo.cli.common import add_fit, add_lora, add_placement, check_frame_flags, fitted_image, loras, placement
from magicvideo.errors import PromptError
from magicvideo.media import FLAVOURS
from magicvideo.presets import PRESETS
from magicvideo.settings import I2VSettings, T2ISettings, V2VSettings, VFISettings, add_flags, check_flags, check_value
from magicvideo.text import is_blank

# generate's flags that decide a run (a resumed run keeps its manifest's; where to run it may change)
RUN_FLAGS = ("seed", "out", "image", "stages", "frames", "seconds", "fps", "times", "t2i_steps", "t2i_guidance",
             "i2v_steps", "i2v_guidance",
             "v2v_steps", "v2v_strength", "gif", "t2i_size", "i2v_size", "v2v_size", "preset", "weights", "dtype",
             "flavour", "lora", "context_length", "context_stride", "prompt_schedule", "fit", "width", "height")

CONTEXT_FLAGS = ("context_length", "context_stride")  # one clip length: stages 2 and 3 share them

# each stage's settings that generate takes, prefixed with the stage's name (--i2v-steps)
STAGE_FLAGS = (("t2i_", T2ISettings, ("steps", "guidance", "size"), "stage 1's"),
               ("i2v_", I2VSettings, ("steps", "guidance", "size"), "stage 2's"),
               ("v2v_", V2VSettings, ("steps", "strength", "size"), "stage 3's"))


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


def new_run(args: argparse.Namespace) -> tuple:
    """(RunSettings, LoRA files, Placement) of a new run from generate's flags, every one checked
    in its own words before any weight loads."""
    from pathlib import Path

    from magicvideo.pipeline import STAGES, RunSettings, check_settings, check_stages
    from magicvideo.presets import size_multiple_of

    if args.prompt_schedule:
        from magicvideo.travel import PromptSchedule

        schedule = PromptSchedule.parse(args.prompt_schedule)
        if args.frames is not None:  # (else the count is stage 2's or the length's, checked once known)
            schedule.check(args.frames)
        args.prompt = args.prompt if args.prompt is not None else schedule.prompts[0]
    if args.prompt is None or is_blank(args.prompt):
        raise PromptError("the prompt is empty")
    for prefix, cls, names, _ in STAGE_FLAGS:  # in the flags' words, before anything is read
        check_flags(args, cls, names, prefix)
    length = check_length(args)
    context = check_flags(args, I2VSettings, CONTEXT_FLAGS)
    default = STAGES[1:] if args.image else STAGES
    stages = check_stages(tuple(args.stages.split(",")) if args.stages else default, args.image)
    if args.image:  # an unreadable image fails before any model loads
        fitted_image(args, args.height or 1, args.width or 1)
    if args.preset == "tiny" and args.width != args.height:
        print("note: the tiny preset's world is square; its stages run on other shapes, but never learnt them",
              file=sys.stderr)
    files = loras(args)
    settings = {k: getattr(args, k) for k in ("t2i_steps", "t2i_guidance", "i2v_steps", "i2v_guidance",
                                              "v2v_steps", "v2v_strength", "t2i_size", "i2v_size", "v2v_size",
                                              "gif", "flavour", "width", "height")}
    where = placement(args)
    weights = str(Path(args.weights).resolve()) if args.weights else None  # the manifest outlives the cwd
    run = RunSettings(prompt=args.prompt, seed=args.seed, preset=args.preset, weights=weights,
                      dtype=where.dtype, image=args.image, fit=args.fit, stages=stages,
                      loras=tuple(map(str, files)),
                      prompt_schedule=args.prompt_schedule, **length, **context, **settings)
    check_settings(run, size_multiple_of(args.preset, weights))  # before any weight loads
    return run, files, where


def check_length(args: argparse.Namespace) -> dict:
    """The run's length, rate and shape flags, checked in their own words: keyframes or seconds,
    the final rate or interpolation's factor (one of each pair at most), width and height together."""
    for a, b in (("frames", "seconds"), ("fps", "times")):
        if getattr(args, a) is not None and getattr(args, b) is not None:
            raise ValueError(f"give --{a} or --{b}, not both")
    check_frame_flags(args)
    check_value(I2VSettings, "frames", args.frames, "--frames")
    check_value(VFISettings, "times", args.times, "--times")
    for name in ("seconds", "fps"):
        value = getattr(args, name)
        if value is not None and not 0 < value <= 1000:
            raise ValueError(f"--{name} must be in (0, 1000], got {value:g}")
    return {k: getattr(args, k) for k in ("frames", "seconds", "fps", "times") if getattr(args, k) is not None}


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
