"""Frame interpolation quality and speed: every method on held-out world clips (8 -> 24 fps
at 128x128) and on panned natural photographs.

    python benchmarks/vfi_quality.py --clips 40
writes benchmarks/results/vfi_quality.md. PSNR and SSIM are over the inserted frames only.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from magicvideo.judge.metrics import psnr, ssim
from magicvideo.presets import load_vfi
from magicvideo.stages.vfi import METHODS, FrameInterpolator
from magicvideo.training.camera import held_out_motions
from magicvideo.world import draw_clip, render_clip
from report import publish

SEED = 4242  # held-out clips no test or training run uses


def world_videos(count: int) -> list[torch.Tensor]:
    """Held-out clips at 24 fps, 46 frames, 128x128: (3, 46, 128, 128) each."""
    return [render_clip(draw_clip(SEED, "heldout", i).scene, 128, 24, 46) for i in range(count)]


def photo_videos() -> list[torch.Tensor]:
    """Natural photos (shipped inside scikit-image's wheel) panned by whole pixels per 24 fps
    frame in several directions, so every in-between frame is exact: (3, 46, 128, 128) each."""
    spec = importlib.util.find_spec("skimage")
    folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    videos = []
    for name, (dx, dy) in (("astronaut.png", (2, 0)), ("coffee.png", (0, 2)), ("chelsea.png", (2, 1)),
                           ("astronaut.png", (-1, 2))):
        img = torch.from_numpy(np.asarray(Image.open(folder / name).convert("RGB")).copy()).permute(2, 0, 1)
        img = img.float() / 255
        x0, y0 = 200 if dx < 0 else 40, 40
        frames = [img[:, y0 + dy * i : y0 + dy * i + 128, x0 + dx * i : x0 + dx * i + 128] for i in range(46)]
        videos.append(torch.stack(frames, 1))
    return videos


def evaluate(method: FrameInterpolator, videos: list[torch.Tensor]) -> tuple[float, float, float]:
    """(PSNR, SSIM, ms per inserted frame) over the inserted frames of all videos."""
    preds, targets, seconds, inserted = [], [], 0.0, 0
    for video in videos:
        keys = video[:, ::3]
        start = time.perf_counter()
        out = method(keys, times=3).frames
        seconds += time.perf_counter() - start
        new = [i for i in range(out.shape[1]) if i % 3]
        inserted += len(new)
        preds.append(out[:, new].transpose(0, 1))
        targets.append(video[:, new].transpose(0, 1))
    p, t = torch.cat(preds), torch.cat(targets)
    return psnr(p, t), ssim(p, t), 1000 * seconds / inserted


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=40)
    ap.add_argument("--weights", default=None, help="EDSC weights folder (default: the shipped tiny weights)")
    ap.add_argument("--methods", nargs="+", default=list(reversed(METHODS)))
    ap.add_argument("--out", default="benchmarks/results/vfi_quality.md")
    args = ap.parse_args()
    torch.set_num_threads(2)
    sets = {"world (held-out)": world_videos(args.clips), "panned photos": photo_videos()}
    motions = held_out_motions()
    rows, motion_rows = [], []
    # IFNet at flow scale 2 too: RIFE's option for small frames (these are 128x128)
    runs = [(name, name, None) for name in args.methods] + [("ifnet, flow scale 2", "ifnet", 2.0)]
    for label, name, scale in runs:
        interp = load_vfi(name, args.weights)
        if scale is not None:
            interp.settings = dataclasses.replace(interp.settings, flow_scale=scale)
        cells = []
        for videos in sets.values():
            p, s, ms = evaluate(interp, videos)
            cells += [f"{p:.2f}", f"{s:.4f}", f"{ms:.0f}"]
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
        kinds = [evaluate(interp, [video]) for video in motions.values()]
        motion_rows.append(f"| {label} | " + " | ".join(f"{p:.2f}" for p, _, _ in kinds)
                           + f" | {sum(p for p, _, _ in kinds) / len(kinds):.2f} | "
                           f"{sum(s for _, s, _ in kinds) / len(kinds):.4f} |")
        print(rows[-1], motion_rows[-1], flush=True)
    publish(args.out, [
        "# Frame interpolation: 8 fps -> 24 fps at 128x128", "",
        f"Inserted frames only (2 per gap). World: {args.clips} held-out clips (seed {SEED}), 16 keyframes each. "
        "Photos: astronaut, coffee and chelsea from scikit-image, panned 2 px (or 2+1 px) per 24 fps frame.",
        f"Command: `python benchmarks/vfi_quality.py --clips {args.clips}`; ms: per inserted frame on this "
        "machine's CPU (2 threads), batch 8.", "",
        "| method | world PSNR | world SSIM | world ms | photos PSNR | photos SSIM | photos ms |",
        "|---|---|---|---|---|---|---|", *rows, "",
        "## Natural motion", "",
        "The same photos under camera-like motion and a moving object (`held_out_motions` in "
        "`training/camera.py`): every frame rendered "
        "from one continuous motion at its instant, at 4x and area-pooled, so positions are sub-pixel and the "
        "in-between frames exact; 3-6 px a keyframe gap at the edges. PSNR of the inserted frames per kind, "
        "their mean, and the mean SSIM. (The panned photos above move by whole pixels, which flatters warping: "
        "a whole-pixel warp adds no blur.) For context only: RIFE's published Vimeo-90K figure is 35.6 dB, on "
        "real video at 448x256.", "",
        "| method | " + " | ".join(motions) + " | mean PSNR | mean SSIM |",
        "|---" * (len(motions) + 3) + "|", *motion_rows, ""])


if __name__ == "__main__":
    main()
