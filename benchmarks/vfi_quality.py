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


def _photo(name: str, side: int) -> torch.Tensor:
    """A scikit-image photo, centre-cropped square and resized to side x side, (3, side, side)."""
    spec = importlib.util.find_spec("skimage")
    img = Image.open(Path(list(spec.submodule_search_locations)[0]) / "data" / name).convert("RGB")
    w, h = img.size
    c = min(w, h)
    img = img.crop(((w - c) // 2, (h - c) // 2, (w - c) // 2 + c, (h - c) // 2 + c)).resize((side, side), Image.LANCZOS)
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255


def _warp(img: torch.Tensor, zoom: float, angle: float, shift: tuple[float, float], size: int,
          over: int = 4) -> torch.Tensor:
    """img seen by a camera zoomed in `zoom` times, turned `angle` degrees and moved `shift` (a
    share of the frame), (3, size, size). Rendered at `over` times `size` (the photo's own
    resolution) and area-pooled: sampled any coarser, its detail aliases differently at each
    sub-pixel position, and the in-between frames are no longer the motion's (measured: every
    interpolator fell under blending on a plain sub-pixel pan rendered at twice the size)."""
    a = np.deg2rad(angle)
    theta = torch.tensor([[np.cos(a) / zoom, -np.sin(a) / zoom, shift[0]],
                          [np.sin(a) / zoom, np.cos(a) / zoom, shift[1]]], dtype=torch.float32)[None]
    grid = torch.nn.functional.affine_grid(theta, (1, 3, over * size, over * size), align_corners=False)
    out = torch.nn.functional.grid_sample(img[None], grid, mode="bilinear", padding_mode="reflection",
                                          align_corners=False)
    return torch.nn.functional.avg_pool2d(out, over)[0]


def motion_videos(frames: int = 46, size: int = 128, over: int = 4) -> dict[str, torch.Tensor]:
    """Natural photos under camera-like motion, and an object moving over one, each frame rendered
    from the same continuous motion at its instant (sub-pixel, antialiased: `_warp`), so the
    in-between frames are exact: {kind: (3, F, S, S)}. A keyframe gap (3 frames at 24 fps) moves
    the picture 3-6 px at its edges, as a brisk pan does at this size."""
    tau = [i / (frames - 1) for i in range(frames)]
    astronaut, coffee, chelsea = (_photo(n, over * size) for n in ("astronaut.png", "coffee.png", "chelsea.png"))
    videos = {
        # (each view stays inside its photo: no mirrored border moves against the motion)
        "pan": [_warp(astronaut, 1.5, 0, (0.6 * t - 0.3, 0.3 * t), size, over) for t in tau],
        "zoom": [_warp(coffee, 1 + t, 0, (0, 0), size, over) for t in tau],
        "rotation": [_warp(chelsea, 1.5, 45 * t, (0, 0), size, over) for t in tau],
        "pan and zoom": [_warp(astronaut, 1.5 + 0.5 * t, 0, (0.4 * t - 0.2, -0.2 * t), size, over) for t in tau],
    }
    # a moving object: a disc of the cat (a quarter of the frame wide) crossing the coffee photo, so
    # there are occlusions at its edges; rendered at `over` times the size too, then pooled
    side, big = over * size // 4, over * size
    cat = _photo("chelsea.png", side)
    yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    disc = ((yy - (side - 1) / 2) ** 2 + (xx - (side - 1) / 2) ** 2 <= (side / 2 - 1) ** 2).float()[None]
    layer_in = torch.cat((cat * disc, disc))[None]
    moving = []
    for t in tau:
        x, y = big * (0.08 + 0.5 * t), big * (0.6 - 0.3 * t)  # the disc's top-left corner, sub-pixel
        theta = torch.tensor([[big / side, 0, (big - side - 2 * x) / side],
                              [0, big / side, (big - side - 2 * y) / side]], dtype=torch.float32)[None]
        grid = torch.nn.functional.affine_grid(theta, (1, 4, big, big), align_corners=False)
        layer = torch.nn.functional.grid_sample(layer_in, grid, align_corners=False)[0]
        frame = coffee * (1 - layer[3:]) + layer[:3]
        moving.append(torch.nn.functional.avg_pool2d(frame[None], over)[0])
    videos["moving object"] = moving
    return {k: torch.stack(v, 1).clamp(0, 1) for k, v in videos.items()}


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
    motions = motion_videos()
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
        "The same photos under camera-like motion and a moving object (`motion_videos`): every frame rendered "
        "from one continuous motion at its instant, at 4x and area-pooled, so positions are sub-pixel and the "
        "in-between frames exact; 3-6 px a keyframe gap at the edges. PSNR of the inserted frames per kind, "
        "their mean, and the mean SSIM. (The panned photos above move by whole pixels, which flatters warping: "
        "a whole-pixel warp adds no blur.) For context only: RIFE's published Vimeo-90K figure is 35.6 dB, on "
        "real video at 448x256.", "",
        "| method | " + " | ".join(motions) + " | mean PSNR | mean SSIM |",
        "|---" * (len(motions) + 3) + "|", *motion_rows, ""])


if __name__ == "__main__":
    main()
