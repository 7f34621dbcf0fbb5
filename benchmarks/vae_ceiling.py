"""The ceiling a VAE sets for every stage on it: held-out first frames, encoded and decoded, read
by the judge, beside the truth itself and bicubic from half the size:

    python benchmarks/vae_ceiling.py [VAE_DIR ...] [--frames 200] [--out benchmarks/results/vae_ceiling.md]

Default folders: the shipped tiny VAE and the 8x one the older stages were trained with. Frames:
the first frames of `--frames` held-out clips (test seed 4242), rendered at 128x128 and at 64x64
(stage 1's reference and stage 2's keyframe size). Per size and input: the judge's shape, colour,
background and all-right shares (a 95% bootstrap interval over clips for shape), PSNR and SSIM
against the truth. The bar (written before the 4x VAE was trained): shape >= 0.98 at 128 and
>= 0.95 at 64, colour and background >= 0.99, PSNR >= 38 dB at 128.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

from magicvideo.judge.judge import Expected, read_clip, score_clip
from magicvideo.judge.metrics import psnr, ssim
from magicvideo.latent import vae_factor
from magicvideo.presets.tiny import TINY_UNET_VAE, TINY_VAE
from magicvideo.training.common import machine
from magicvideo.training.vae import reconstruct
from magicvideo.world import draw_clip, render_frames
from report import publish

SEED = 4242
BAR = {128: {"shape": 0.98, "colour": 0.99, "background": 0.99, "psnr": 38.0},
       64: {"shape": 0.95, "colour": 0.99, "background": 0.99}}


def judge(images: torch.Tensor, clips: list) -> dict:
    """The judge's shares on (N, 3, H, W) images, and a 95% bootstrap interval for shape."""
    scores = []
    for clip, image in zip(clips, images):
        expected = Expected([(o.shape, o.colour, None) for o in clip.scene.objects], clip.scene.background)
        scores.append(score_clip(read_clip(image), expected))
    objects = np.array([s["objects_expected"] for s in scores])
    shape = np.array([s["shape"] for s in scores])
    rng = np.random.default_rng(0)
    draws = rng.integers(0, len(scores), (2000, len(scores)))
    boot = shape[draws].sum(1) / objects[draws].sum(1)
    return {"shape": shape.sum() / objects.sum(), "shape_ci": tuple(np.percentile(boot, [2.5, 97.5])),
            "colour": sum(s["colour"] for s in scores) / objects.sum(),
            "background": float(np.mean([s["background"] for s in scores])),
            "all": float(np.mean([s["all"] for s in scores]))}


def bicubic_from_half(images: torch.Tensor) -> torch.Tensor:
    size = images.shape[-1]
    low = F.interpolate(images, size=size // 2, mode="area")
    return F.interpolate(low, size=size, mode="bicubic", align_corners=False).clamp(0, 1)


def measure(inputs: dict[str, torch.Tensor], truth: torch.Tensor, clips: list) -> dict[str, dict]:
    rows = {}
    for name, images in inputs.items():
        row = judge(images, clips)
        same = torch.equal(images, truth)
        row["psnr"] = float("inf") if same else psnr(images, truth)
        row["ssim"] = 1.0 if same else ssim(images, truth)
        rows[name] = row
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="*", help="VAE folders (diffusers AutoencoderKL)")
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 64], help="frame sides (default 128 64)")
    parser.add_argument("--out", default="benchmarks/results/vae_ceiling.md")
    args = parser.parse_args()
    folders = args.folders or [str(TINY_VAE), str(TINY_UNET_VAE)]
    vaes = {}
    for folder in folders:
        vae = AutoencoderKL.from_pretrained(folder, torch_dtype=torch.float32).eval()
        vaes[f"{Path(folder).name} ({vae_factor(vae)}x)"] = vae
    clips = [draw_clip(SEED, "heldout", i) for i in range(args.frames)]
    started = time.perf_counter()
    results = {}
    for size in args.sizes:
        truth = torch.stack([render_frames(c.scene, size, [0.0])[:, 0] for c in clips])
        inputs = {"truth": truth, "bicubic from half size": bicubic_from_half(truth)}
        inputs.update({name: reconstruct(vae, truth) for name, vae in vaes.items()})
        results[size] = measure(inputs, truth, clips)
    lines = [
        "# VAE ceiling: held-out frames through the VAE alone, read by the judge", "",
        f"Command: `python benchmarks/vae_ceiling.py {' '.join(args.folders)} --frames {args.frames} --sizes "
        f"{' '.join(map(str, args.sizes))}`"
        f" ({time.perf_counter() - started:.0f} s on {machine()}). First frames of {args.frames} held-out clips"
        f" (seed {SEED}), rendered at each size; shape and colour are shares of objects, background and"
        " all of frames; [..] a 95% bootstrap interval over clips.", "",
    ]
    for size, rows in results.items():
        lines += [f"## {size}x{size}", "", "| input | shape | colour | background | all | PSNR dB | SSIM |",
                  "|---|---|---|---|---|---|---|"]
        for name, r in rows.items():
            lo, hi = r["shape_ci"]
            lines.append(f"| {name} | {r['shape']:.3f} [{lo:.3f}, {hi:.3f}] | {r['colour']:.3f} | "
                         f"{r['background']:.3f} | {r['all']:.3f} | {r['psnr']:.2f} | {r['ssim']:.4f} |")
        lines.append("")
    lines += ["## Bar", "", "| VAE | size | " + " | ".join(BAR[128]) + " | met |", "|---|---|---|---|---|---|---|"]
    for name in vaes:
        for size, bar in BAR.items():
            if size not in results:
                continue
            r = results[size][name]
            cells = [f"{r[k]:.3f} (>= {bar[k]})" if k in bar else "-" for k in BAR[128]]
            met = all(r[k] >= v for k, v in bar.items())
            lines.append(f"| {name} | {size} | " + " | ".join(cells) + f" | {'yes' if met else 'no'} |")
    publish(args.out, lines)
    Path(args.out).with_suffix(".json").write_text(json.dumps(
        {str(s): {n: {k: v for k, v in r.items()} for n, r in rows.items()} for s, rows in results.items()},
        indent=1, default=float) + "\n")


if __name__ == "__main__":
    main()
