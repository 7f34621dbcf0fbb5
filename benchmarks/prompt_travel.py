"""Does prompt travel move what stage 2 draws? A colour schedule, read frame by frame.

    python benchmarks/prompt_travel.py [--clips 12] [--frames 16]
writes benchmarks/results/prompt_travel.md. One-object held-out test clips (seed 4242), the true
first frame as the reference (colour A), one video each at seed 0 and the stage's defaults, once
with the clip's caption alone and once with the schedule "0: caption | last frame: the same scene
in colour B" (B: another colour, a caption of the world's own phrasing). The judge reads the
object's colour on every frame; the table gives the share of the first and of the last quarter of
the frames read as A and as B, and the travelled minus the plain share of B in the last quarter
with a paired 95% bootstrap interval over clips.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import numpy as np
import torch

from magicvideo.judge.judge import read_clip
from magicvideo.presets import load_i2v
from magicvideo.training.common import machine
from magicvideo.travel import PromptSchedule
from magicvideo.world import draw_clip, make_caption, render_frames
from magicvideo.world.vocab import COLOUR_WORDS
from report import publish

SEED = 4242
COLOURS = list(COLOUR_WORDS)


def one_object_clips(count: int) -> list:
    clips, i = [], 0
    while len(clips) < count:
        clip = draw_clip(SEED, "heldout", i)
        if len(clip.scene.objects) == 1:
            clips.append(clip)
        i += 1
    return clips


def recoloured(clip, index: int) -> tuple[str, str]:
    """Colour B (three along the world's list from A) and a caption of the scene in it."""
    obj = clip.scene.objects[0]
    colour = COLOURS[(COLOURS.index(obj.colour) + 3) % len(COLOURS)]
    scene = dataclasses.replace(clip.scene, objects=(dataclasses.replace(obj, colour=colour),))
    return colour, make_caption(scene, np.random.default_rng(index), "train")


def colours_read(video: torch.Tensor) -> list[str | None]:
    """The largest object's colour on each frame of (3, F, H, W), None where none is found."""
    out = []
    for f in range(video.shape[1]):
        objects = read_clip(video[:, f]).objects
        out.append(objects[0].colour if objects else None)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--out", default="benchmarks/results/prompt_travel.md")
    args = parser.parse_args()
    stage = load_i2v("tiny")
    quarter = max(args.frames // 4, 1)
    shares = {"plain": [], "travel": []}  # per clip: (first A, first B, last A, last B)
    for i, clip in enumerate(one_object_clips(args.clips)):
        a = clip.scene.objects[0].colour
        b, caption_b = recoloured(clip, i)
        ref = render_frames(clip.scene, 128, [0.0])[:, 0]
        schedule = PromptSchedule(((0, clip.caption), (args.frames - 1, caption_b)))
        for name, prompt in (("plain", clip.caption), ("travel", schedule)):
            read = colours_read(stage(prompt, ref, seed=0, frames=args.frames).frames[0])
            first, last = read[:quarter], read[-quarter:]
            shares[name].append([np.mean([c == a for c in first]), np.mean([c == b for c in first]),
                                 np.mean([c == a for c in last]), np.mean([c == b for c in last])])
        print(f"clip {i}: {a} -> {b}", file=sys.stderr)
    plain, travel = (np.array(shares[k]) for k in ("plain", "travel"))
    diffs = travel[:, 3] - plain[:, 3]
    rng = np.random.default_rng(0)
    boot = diffs[rng.integers(0, len(diffs), (4000, len(diffs)))].mean(1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    lines = ["# Prompt travel on stage 2 (tiny): a colour schedule", "",
             f"`python benchmarks/prompt_travel.py {' '.join(sys.argv[1:])}` on {machine()}. {args.clips} one-object "
             f"held-out test clips (seed {SEED}), {args.frames} keyframes, the true first frame (colour A) as the "
             "reference, seed 0, defaults; travel: `0: caption | "
             f"{args.frames - 1}: the scene in colour B`. Shares of the first and last {quarter} frames whose object "
             "the judge reads in each colour.", "",
             "| prompt | first: A | first: B | last: A | last: B |", "|---|---|---|---|---|"]
    for name, rows in (("caption alone", plain), ("travel A -> B", travel)):
        lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in rows.mean(0)) + " |")
    lines += ["", f"Last frames read as B, travel minus caption alone: {diffs.mean():+.3f} "
                  f"[{lo:+.3f}, {hi:+.3f}] (paired 95% bootstrap over clips)."]
    publish(args.out, lines)


if __name__ == "__main__":
    main()
