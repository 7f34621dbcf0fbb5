"""The cascade end to end: speed per stage and the judge on the final videos.

    python benchmarks/generate_quality.py --prompts 100 [--cache-interval N]   # --prompts 0: speed only
writes benchmarks/results/generate_quality.md:
- speed: `magicvideo generate`'s work (the four stages at their defaults, files written) on one
  held-out prompt, 5 runs, median seconds per stage and in all, and the process's peak memory;
- quality: held-out prompts (seed 4242, each video at seed 0), the judge's reading of the final
  46-frame 128x128 videos against the prompts' scenes, with flicker and track jitter beside the
  ground truth's (the same scenes rendered at 24 fps).
Run it from the repository root.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from magicvideo.judge.files import expected_from_scene
from magicvideo.judge.judge import aggregate, read_clip, score_clip
from magicvideo.pipeline import STAGES, MagicVideoPipeline
from magicvideo.training.common import machine
from magicvideo.world import draw_clip, render_frames
from magicvideo.world.render import frame_times
from report import publish

TEST_SEED = 4242
HEADER = ["| | shape | colour | motion | background | clips all right | flicker | track jitter |",
          "|---|---|---|---|---|---|---|---|"]


def row(name: str, r: dict) -> str:
    a, t = r["accuracy"], r["temporal"]
    return (f"| {name} | {a['shape']:.3f} | {a['colour']:.3f} | {a['motion']:.3f} | {a['background']:.3f} | "
            f"{a['all']:.3f} | {t['flicker'] * 1000:.2f} | {t['track_jitter'] * 1000:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=100, help="held-out prompts for the quality table")
    parser.add_argument("--runs", type=int, default=5, help="timed runs")
    parser.add_argument("--cache-interval", type=int, help="stages 1-3's deep-feature reuse (default: each stage's)")
    parser.add_argument("--out", default="benchmarks/results/generate_quality.md")
    args = parser.parse_args()
    extra = {"cache_interval": args.cache_interval} if args.cache_interval else {}
    began = time.perf_counter()
    pipe = MagicVideoPipeline.from_preset("tiny")
    load_seconds = time.perf_counter() - began
    clips = [draw_clip(TEST_SEED, "heldout", i) for i in range(max(args.prompts, 1))]
    lines = ["# The cascade: `magicvideo generate` (tiny preset)", "",
             f"`python benchmarks/generate_quality.py {' '.join(sys.argv[1:])}` on {machine()}. Every stage at its "
             "defaults: T2I 128x128, I2V 16 keyframes at 64x64, V2V to 128x128, VFI (EDSC) x3: 46 frames at 24 fps"
             + (f"; cache interval {args.cache_interval} in stages 1-3." if extra else "."), ""]
    with tempfile.TemporaryDirectory() as tmp:
        per_stage: dict[str, list[float]] = {s: [] for s in STAGES}
        totals = []
        for k in range(args.runs):
            start = time.perf_counter()
            out = pipe(clips[0].caption, seed=0, out=Path(tmp) / f"speed{k}", progress=False, **extra)
            totals.append(time.perf_counter() - start)
            for s in STAGES:
                per_stage[s].append(out.manifest["stages"][s]["seconds"])
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        lines += ["## Speed", "", f"One prompt, {args.runs} runs, median seconds (loading the four stages once: "
                  f"{load_seconds:.1f} s, not counted):", "",
                  "| t2i | i2v | v2v | vfi | end to end (files included) |", "|---|---|---|---|---|",
                  "| " + " | ".join(f"{statistics.median(per_stage[s]):.2f}" for s in STAGES)
                  + f" | {statistics.median(totals):.2f} |", "",
                  f"Peak memory of the process (resident): {peak:.0f} MiB.", ""]
        scores, readings, truth_scores, truth_readings = [], [], [], []
        for i, clip in enumerate(tqdm(clips[: args.prompts], desc="generate on held-out prompts")):
            frames = pipe(clip.caption, seed=0, out=Path(tmp) / f"q{i}", progress=False, **extra).frames
            expected = expected_from_scene(clip.scene)
            reading = read_clip(frames)
            scores.append(score_clip(reading, expected))
            readings.append(reading)
            truth = render_frames(clip.scene, frames.shape[-1], frame_times(24.0, frames.shape[1]))
            truth_reading = read_clip(truth)
            truth_scores.append(score_clip(truth_reading, expected))
            truth_readings.append(truth_reading)
    if not args.prompts:
        publish(args.out, lines)
        return
    lines += [f"## Quality ({args.prompts} held-out prompts, seed {TEST_SEED}, one video each at seed 0)", "",
              *HEADER, row("ground truth (the scenes rendered, 46 frames at 24 fps)",
                           aggregate(truth_scores, truth_readings)),
              row("`magicvideo generate`", aggregate(scores, readings)), "",
              "Shape, colour, motion: share of objects the judge reads right; background, clips all right: share "
              "of clips; flicker: mean background change between frames (x1000); track jitter: mean |second "
              "difference| of object centres (frame widths, x1000)."]
    publish(args.out, lines)


if __name__ == "__main__":
    main()
