"""A run's settings from `generate`'s flags, every one checked in its own words before any weight
loads: one run (`generate`) or a line of a prompt file (`generate --prompts`) alike."""

from __future__ import annotations

import argparse
import sys

from magicvideo.cli.common import check_frame_flags, fitted_image, loras, placement
from magicvideo.errors import PromptError
from magicvideo.settings import I2VSettings, T2ISettings, V2VSettings, VFISettings, check_flags, check_value
from magicvideo.text import is_blank

# generate's flags that decide a run (a resumed run keeps its manifest's; where to run it may change)
RUN_FLAGS = ("seed", "out", "image", "stages", "frames", "seconds", "fps", "times", "t2i_steps", "t2i_guidance",
             "i2v_steps", "i2v_guidance",
             "v2v_steps", "v2v_strength", "gif", "t2i_size", "i2v_size", "v2v_size", "preset", "weights", "dtype",
             "flavour", "lora", "context_length", "context_stride", "prompt_schedule", "fit", "width", "height",
             "cache_interval")

CONTEXT_FLAGS = ("context_length", "context_stride")  # one clip length: stages 2 and 3 share them
CACHE_FLAGS = ("cache_interval",)  # one for stages 1-3

# each stage's settings that generate takes, prefixed with the stage's name (--i2v-steps)
STAGE_FLAGS = (("t2i_", T2ISettings, ("steps", "guidance", "size"), "stage 1's"),
               ("i2v_", I2VSettings, ("steps", "guidance", "size"), "stage 2's"),
               ("v2v_", V2VSettings, ("steps", "strength", "size"), "stage 3's"))


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
    cache = check_flags(args, I2VSettings, CACHE_FLAGS)
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
                      prompt_schedule=args.prompt_schedule, **length, **context, **cache, **settings)
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
