"""The scene-cut threshold of frame interpolation, measured: how far `scene_change` reads gaps
within one scene (motion) and gaps across a cut, on the world's clips and on natural photographs
moved as a camera moves them:

    python benchmarks/vfi_scene_cuts.py [--clips 100] [--out benchmarks/results/vfi_scene_cuts.md]

Within a scene: consecutive frames of world clips (128x128, 8 fps: the keyframes' rate, the
largest motion a gap holds) and of scikit-image's photographs panned (6 px, and 24 px: a tenth
of the frame), zoomed (3%) and rotated (2 degrees) a frame in a 256x256 window. Across a cut: the last frame of one
clip against the first of the next, and one photograph against another. Validation: world seed
777 and the even-numbered photographs; test: world seed 4242 and the odd-numbered ones.

Rule: three times the largest within-scene reading on validation. (The first rule, written
before the 100-clip run, took the midpoint between that largest reading and the next cut above
it; it gave 0.042, 0.004 above the fastest camera motion measured, so footage moving a little
faster than ours would judder at every gap. A false cut costs a judder wherever a video moves
that much; a missed cut costs one ghosted gap. Both thresholds are reported on test.)
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from magicvideo.stages.vfi import scene_change
from magicvideo.training.common import machine
from magicvideo.world import draw_clip, render_clip
from report import publish

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina", "ihc", "motorcycle_left",
          "camera", "moon", "brick", "grass", "gravel", "coins")


def photo(name: str) -> torch.Tensor:
    folder = Path(list(importlib.util.find_spec("skimage").submodule_search_locations)[0]) / "data"
    path = next(folder.glob(f"{name}.*"))
    pixels = np.asarray(Image.open(path).convert("RGB").resize((512, 512))).copy()
    return torch.from_numpy(pixels).permute(2, 0, 1).float() / 255


def camera(image: torch.Tensor, frames: int = 8) -> dict[str, list[torch.Tensor]]:
    """The photograph through a 256x256 window that pans, zooms or rotates, frame by frame."""
    moves = {"pan": [], "fast pan": [], "zoom": [], "rotate": []}
    for i in range(frames):
        moves["pan"].append(image[:, 128:384, 64 + 6 * i : 320 + 6 * i])
        moves["fast pan"].append(image[:, 128:384, 24 * i : 256 + 24 * i])  # a tenth of the frame a gap
        for kind, theta in (("zoom", torch.tensor([[0.5 / 1.03 ** i, 0, 0], [0, 0.5 / 1.03 ** i, 0]])),
                            ("rotate", _rotation(2.0 * i))):
            grid = F.affine_grid(theta[None], (1, 3, 256, 256), align_corners=False)
            moves[kind].append(F.grid_sample(image[None], grid, align_corners=False)[0])
    return moves


def _rotation(degrees: float) -> torch.Tensor:
    a = np.deg2rad(degrees)
    return torch.tensor([[0.5 * np.cos(a), -0.5 * np.sin(a), 0], [0.5 * np.sin(a), 0.5 * np.cos(a), 0]],
                        dtype=torch.float)


def readings(seed: int, clips: int, photos: list[str]) -> dict[str, list[float]]:
    out = {"world, within a clip": [], "world, cut": [], "photos, camera motion": [], "photos, cut": []}
    previous = None
    for i in range(clips):
        clip = render_clip(draw_clip(seed, "heldout", i).scene, size=128, fps=8, frames=16)
        frames = clip.unbind(1)
        out["world, within a clip"] += [scene_change(a, b) for a, b in zip(frames, frames[1:])]
        if previous is not None:
            out["world, cut"].append(scene_change(previous, frames[0]))
        previous = frames[-1]
    shots = [camera(photo(name)) for name in photos]
    for moves in shots:
        for frames in moves.values():
            out["photos, camera motion"] += [scene_change(a, b) for a, b in zip(frames, frames[1:])]
    for a in range(len(shots)):
        for b in range(len(shots)):
            if a != b:
                out["photos, cut"].append(scene_change(shots[a]["pan"][-1], shots[b]["pan"][0]))
    return out


def first_rule(within: list[float], cuts: list[float]) -> float:
    top = max(within)  # no within-scene gap flagged: the threshold is above every one of them
    above = sorted(c for c in cuts if c > top)
    return (top + above[0]) / 2 if above else top


def choose(within: list[float]) -> float:
    return 3 * max(within)  # room for motion faster than any measured here


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=100)
    parser.add_argument("--out", default="benchmarks/results/vfi_scene_cuts.md")
    args = parser.parse_args()
    started = time.perf_counter()
    val = readings(777, args.clips, list(PHOTOS[0::2]))
    test = readings(4242, args.clips, list(PHOTOS[1::2]))
    within = val["world, within a clip"] + val["photos, camera motion"]
    threshold = choose(within)
    tight = first_rule(within, val["world, cut"] + val["photos, cut"])
    lines = ["# Scene cuts: where frame interpolation stops blending", "",
             f"Command: `python benchmarks/vfi_scene_cuts.py --clips {args.clips}` "
             f"({time.perf_counter() - started:.0f} s on {machine()}). `scene_change`: half the L1 distance "
             "of two frames' 16-bin colour histograms (64x64 thumbnails), averaged over R, G, B.", "",
             f"Threshold chosen on validation by the rule in the script: **{threshold:.3f}** (the first "
             f"rule's: {tight:.3f}).", "",
             "| split | gaps | count | median | 99th percentile | max | min | flagged as cuts | flagged at "
             f"{tight:.3f} |", "|---|---|---|---|---|---|---|---|---|"]
    for split, data in (("validation", val), ("test", test)):
        for kind, values in data.items():
            v = np.array(values)
            lines.append(f"| {split} | {kind} | {len(v)} | {np.median(v):.3f} | {np.percentile(v, 99):.3f} | "
                         f"{v.max():.3f} | {v.min():.3f} | {(v > threshold).mean():.3f} | {(v > tight).mean():.3f} |")
    lines.append("")
    publish(args.out, lines)
    print(f"threshold {threshold:.3f}")


if __name__ == "__main__":
    main()
