"""Long clips from stage 2 in context windows: does the video hold together past one window?

    python benchmarks/long_video.py [--clips 8] [--frames 16 64 128] [--context-length 16] [--context-stride 4]
writes benchmarks/results/long_video.md. Held-out test clips (seed 4242), the true first frame as
the reference, one video each at seed 0 and the stage's defaults, sampled in context windows of
`--context-length` frames `--context-stride` apart (16 frames: one window, the plain loop). Per
frame count, in a process of its own (so its peak memory is its own):
- the judge on the whole clip (motion right, the share of frames showing the modal object count)
  and on each run of `context-length` frames (the same, averaged over the runs);
- background flicker of the frame pairs at a window's edge (a window starts on the later frame
  or ends on the earlier one) against the pairs inside every window, with a paired 95% bootstrap
  interval over clips for the difference: seams no worse than inside is an interval that reaches 0
  or below;
- seconds per clip and the process's peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch

from i2v_flicker import split
from magicvideo.diffusion.windows import context_windows
from magicvideo.judge.files import expected_from_scene
from magicvideo.judge.judge import read_clip, score_clip
from magicvideo.presets import load_i2v
from magicvideo.training.common import machine
from magicvideo.world import draw_clip, render_frames
from report import publish

SEED = 4242


def motion_right(video: torch.Tensor, clip) -> float | None:
    score = score_clip(read_clip(video), expected_from_scene(clip.scene))
    return None if score["motion"] is None else score["motion"] / score["objects_expected"]


def seam_pairs(frames: int, length: int, stride: int) -> np.ndarray:
    """(frames - 1,) bool: the pairs (f, f + 1) at some window's edge."""
    seams = np.zeros(frames - 1, bool)
    windows = context_windows(frames, length, stride)
    if len(windows) == 1:
        return seams
    for w in windows:
        if w[0] > 0:
            seams[w[0] - 1] = True
        if w[-1] < frames - 1:
            seams[w[-1]] = True
    return seams


def measure(frames: int, clips: int, length: int, stride: int) -> dict:
    """One frame count, in this process: every clip's readings, its time, the peak memory."""
    stage = load_i2v("tiny")
    seams = seam_pairs(frames, length, stride)
    rows = []
    for i in range(clips):
        clip = draw_clip(SEED, "heldout", i)
        ref = render_frames(clip.scene, 128, [0.0])[:, 0]
        began = time.perf_counter()
        video = stage(clip.caption, ref, seed=0, frames=frames, context_length=length,
                      context_stride=stride).frames[0]
        seconds = time.perf_counter() - began
        runs = [video[:, a : a + length] for a in range(0, frames - length + 1, length)]
        pairs = split(video)[0]
        rows.append({
            "seconds": seconds, "motion": motion_right(video, clip), "count": read_clip(video).count_stability,
            "motion_runs": [m for m in (motion_right(r, clip) for r in runs) if m is not None],
            "count_runs": [read_clip(r).count_stability for r in runs],
            "seam": float(np.nanmean(pairs[seams])) if seams.any() else None,
            "inside": float(np.nanmean(pairs[~seams])),
        })
    return {"frames": frames, "rows": rows, "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def interval(diffs: np.ndarray) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    means = diffs[rng.integers(0, len(diffs), (4000, len(diffs)))].mean(1)
    return tuple(np.percentile(means, [2.5, 97.5]))


def _mean(rows: list[dict], key: str) -> float:
    values = [x[key] for x in rows if x[key] is not None]
    return float(np.nanmean(values)) if values else float("nan")


def _per_run(rows: list[dict], key: str) -> float:
    values = [np.mean(x[key]) for x in rows if x[key]]
    return float(np.mean(values)) if values else float("nan")


def table(results: list[dict], length: int, stride: int, clips: int, command: str) -> list[str]:
    lines = ["# Long clips in context windows (stage 2, tiny)", "",
             f"`{command}` on {machine()}. {clips} held-out test clips (seed {SEED}), the true first frame as "
             f"the reference, one video each at seed 0, windows of {length} frames {stride} apart. Motion: the "
             f"share of objects whose motion the judge reads right; count: the share of frames showing the clip's "
             f"modal object count; per run: the same on each run of {length} frames, averaged. Flicker x1000 on "
             "background pixels, at window edges (seam) and inside every window; seam - inside with a paired 95% "
             "bootstrap interval over clips.", "",
             "| keyframes | windows | motion (clip) | motion (per run) | count (clip) | count (per run) "
             "| flicker inside | flicker seam | seam - inside [95%] | s per clip | peak GB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        rows, frames = r["rows"], r["frames"]
        seam = [x for x in rows if x["seam"] is not None]
        gap, seam_text = "(one window)", "-"
        if seam:
            diffs = np.array([x["seam"] - x["inside"] for x in seam]) * 1000
            lo, hi = interval(diffs)
            gap, seam_text = f"{diffs.mean():+.2f} [{lo:+.2f}, {hi:+.2f}]", f"{_mean(rows, 'seam') * 1000:.2f}"
        seconds = np.median([x["seconds"] for x in rows])
        lines.append(f"| {frames} | {len(context_windows(frames, length, stride))} | {_mean(rows, 'motion'):.3f} | "
                     f"{_per_run(rows, 'motion_runs'):.3f} | {_mean(rows, 'count'):.3f} | "
                     f"{_per_run(rows, 'count_runs'):.3f} | {_mean(rows, 'inside') * 1000:.2f} | {seam_text} | "
                     f"{gap} | {seconds:.1f} | {r['peak_gb']:.2f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--frames", type=int, nargs="+", default=[16, 64, 128])
    parser.add_argument("--context-length", type=int, default=16)
    parser.add_argument("--context-stride", type=int, default=4)
    parser.add_argument("--out", default="benchmarks/results/long_video.md")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a worker: this frame count, JSON out
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.clips, args.context_length, args.context_stride)))
        return
    results = []
    for frames in args.frames:
        done = subprocess.run([sys.executable, __file__, "--one", str(frames), "--clips", str(args.clips),
                               "--context-length", str(args.context_length), "--context-stride",
                               str(args.context_stride)], capture_output=True, text=True, check=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"{frames} keyframes done", file=sys.stderr)
    command = "python benchmarks/long_video.py " + " ".join(sys.argv[1:])
    publish(args.out, table(results, args.context_length, args.context_stride, args.clips, command.strip()))


if __name__ == "__main__":
    main()
