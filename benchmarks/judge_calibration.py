"""Judge calibration: accuracy and per-attribute confusion on held-out ground-truth clips,
clean (through the default mp4 round trip) and degraded (blur, noise, JPEG, 4:2:0 video).

    python benchmarks/judge_calibration.py --count 500 --degraded-count 200
writes benchmarks/results/judge_calibration.md and prints it.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from collections import Counter
from multiprocessing import Pool
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from magicvideo.judge import aggregate, read_clip, score_clip
from magicvideo.judge.files import expected_from_scene
from magicvideo.media import read_video, write_video
from magicvideo.world import draw_clip, render_clip
from report import publish

SEED = 2026  # calibration clips: heldout split, a seed no test uses


def _jpeg(video: torch.Tensor, quality: int = 30) -> torch.Tensor:
    out = []
    for f in video.unbind(1):
        buf = io.BytesIO()
        Image.fromarray((f.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(buf, "JPEG", quality=quality)
        out.append(torch.from_numpy(np.asarray(Image.open(buf)).copy()).permute(2, 0, 1).float() / 255)
    return torch.stack(out, 1)


def _blur(video: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    frames = [cv2.GaussianBlur(f.permute(1, 2, 0).numpy(), (0, 0), sigma) for f in video.unbind(1)]
    return torch.from_numpy(np.stack(frames)).permute(3, 0, 1, 2)


def _noise(video: torch.Tensor, sigma: float = 0.05) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return (video + sigma * torch.randn(video.shape, generator=g)).clamp(0, 1)


def _mp4(video: torch.Tensor, flavour: str) -> torch.Tensor:
    with tempfile.TemporaryDirectory() as tmp:
        write_video(Path(tmp) / "v.mp4", video, 8, flavour)
        return read_video(Path(tmp) / "v.mp4")[0]


CONDITIONS = {
    "clean (mp4, yuv444p)": lambda v: _mp4(v, "measure"),
    "gaussian blur, sigma 1 px": _blur,
    "gaussian noise, sigma 0.05": _noise,
    "JPEG quality 75": lambda v: _jpeg(v, 75),
    "JPEG quality 30": _jpeg,
    "mp4 yuv420p (web)": lambda v: _mp4(v, "web"),
}


def _one(job: tuple[str, int, int]) -> tuple[dict, object, list[tuple[str, str, str]]]:
    torch.set_num_threads(1)
    condition, size, index = job
    clip = draw_clip(SEED, "heldout", index)
    video = CONDITIONS[condition](render_clip(clip.scene, size, fps=8, frames=16))
    reading = read_clip(video)
    expected = expected_from_scene(clip.scene)
    score = score_clip(reading, expected)
    pairs = []  # (attribute, truth, read) for the confusion tables
    matched = dict((a, b) for a, b in score["matches"])
    for a, (shape, colour, motion) in enumerate(expected.objects):
        got = reading.objects[matched[a]] if a in matched else None
        pairs += [("shape", shape, got.shape if got else "missing"),
                  ("colour", colour, got.colour if got else "missing"),
                  ("motion", motion, got.motion if got else "missing")]
    pairs.append(("background", clip.scene.background, reading.background))
    return score, reading, pairs


def _confusion(pairs: list[tuple[str, str, str]], attribute: str) -> str:
    counts = Counter((t, r) for a, t, r in pairs if a == attribute)
    truths = sorted({t for t, _ in counts})
    reads = sorted({r for _, r in counts})
    lines = [f"| truth \\ read | {' | '.join(reads)} |", "|---" * (len(reads) + 1) + "|"]
    lines += [f"| {t} | {' | '.join(str(counts.get((t, r), '')) for r in reads)} |" for t in truths]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=500)
    ap.add_argument("--degraded-count", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/judge_calibration.md")
    args = ap.parse_args()
    runs = [(c, s, args.count if c.startswith("clean") else args.degraded_count)
            for c in CONDITIONS for s in (64, 128)]
    rows, confusions = [], []
    with Pool(args.workers) as pool:
        for condition, size, n in runs:
            start = time.perf_counter()
            results = pool.map(_one, [(condition, size, i) for i in range(n)], chunksize=4)
            secs = time.perf_counter() - start
            report = aggregate([r[0] for r in results], [r[1] for r in results])
            acc = report["accuracy"]
            rows.append(f"| {condition} | {size} | {n} | " + " | ".join(
                f"{acc[k]:.3f}" for k in ("shape", "colour", "motion", "background", "all"))
                + f" | {report['temporal']['count_stability']:.3f} | {secs / n * 1000:.0f} |")
            print(rows[-1], flush=True)
            if condition.startswith("clean"):
                pairs = [p for r in results for p in r[2]]
                confusions.append(f"### {size}x{size}, {condition}, {n} clips\n\n" + "\n\n".join(
                    f"**{a}**\n\n{_confusion(pairs, a)}" for a in ("shape", "colour", "motion", "background")))
    publish(args.out, [
        "# Judge calibration", "",
        f"Held-out ground-truth clips (seed {SEED}), 16 keyframes at 8 fps. Accuracy: shape, colour and",
        "motion over objects; background and all (every attribute and the object count right) over clips.",
        "Command: `python benchmarks/judge_calibration.py "
        f"--count {args.count} --degraded-count {args.degraded_count}`.", "",
        "| condition | size | clips | shape | colour | motion | background | all | count stability | ms/clip |",
        "|---|---|---|---|---|---|---|---|---|---|", *rows, "",
        "ms/clip: wall time per clip with " f"{args.workers} worker processes (render + degrade + judge).", "",
        "## Confusion (clean)", "", *confusions, ""])


if __name__ == "__main__":
    main()
