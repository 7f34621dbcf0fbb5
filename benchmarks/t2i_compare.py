"""Two stage-1 folders side by side on held-out prompts: a tuned or distilled stage against the
stage it came from.

    python benchmarks/t2i_compare.py --tuned runs/pref/final [--base DIR] [--prompts 200]
        [--out benchmarks/results/preference_quality.md] [--sheet PNG]

One image per held-out prompt (seed 777, image seed 0, each stage's own defaults: a few-step
stage's sampler and steps too) from each stage, read by the judge: shape, colour and background
accuracy, "all", the difference with a 95% paired bootstrap interval over prompts, the same
divided by the VAE's ceiling (the true images through the stage's own VAE, read the same way), so
a gain is seen against what the latent can hold, and each stage's seconds per image (median over
its batches of 25). A contact sheet shows the prompts on which the two stages' shape readings
differ, base left, tuned right, to look at by eye: shapes drawn right, or the judge's blind spots.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image, ImageDraw

from magicvideo.judge.judge import read_clip, score_clip
from magicvideo.judge.t2i import expected
from magicvideo.presets import load_t2i
from magicvideo.training.common import machine
from magicvideo.world import draw_clip, render_frames
from report import publish

KEYS = ("shape", "colour", "background", "all")


def scores(images: list[torch.Tensor], clips: list) -> dict[str, np.ndarray]:
    """Per prompt: right shapes, right colours, objects asked, background right, all right."""
    rows = [score_clip(read_clip(image), expected(clip)) for image, clip in zip(images, clips, strict=True)]
    return {"shape": np.array([r["shape"] for r in rows]), "colour": np.array([r["colour"] for r in rows]),
            "objects": np.array([r["objects_expected"] for r in rows]),
            "background": np.array([float(r["background"]) for r in rows]),
            "all": np.array([float(r["all"]) for r in rows])}


def accuracy(s: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, float]:
    """Shape and colour per object, background and all per prompt, over the prompts `idx`."""
    objects = s["objects"][idx].sum()
    return {"shape": s["shape"][idx].sum() / objects, "colour": s["colour"][idx].sum() / objects,
            "background": s["background"][idx].mean(), "all": s["all"][idx].mean()}


def paired(base: dict, tuned: dict, draws: int = 4000) -> dict[str, tuple[float, float, float]]:
    """Tuned minus base per attribute, with a 95% bootstrap interval resampling prompts (both
    stages' readings on the same prompts together)."""
    n = len(base["objects"])
    everything = np.arange(n)
    rng = np.random.default_rng(0)
    boot = {k: [] for k in KEYS}
    for _ in range(draws):
        idx = rng.integers(0, n, n)
        a, b = accuracy(base, idx), accuracy(tuned, idx)
        for k in KEYS:
            boot[k].append(b[k] - a[k])
    whole = {k: accuracy(tuned, everything)[k] - accuracy(base, everything)[k] for k in KEYS}
    return {k: (whole[k], *np.percentile(boot[k], [2.5, 97.5])) for k in KEYS}


def sheet(path: str, base: list[torch.Tensor], tuned: list[torch.Tensor], clips: list, rows: list[int]) -> None:
    """base | tuned, one prompt a row, the prompt written beside them."""
    side, text = 128, 360
    canvas = Image.new("RGB", (2 * side + text, side * max(len(rows), 1)), "white")
    draw = ImageDraw.Draw(canvas)
    for r, i in enumerate(rows):
        for c, image in enumerate((base[i], tuned[i])):
            pixels = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            canvas.paste(Image.fromarray(pixels), (c * side, r * side))
        draw.text((2 * side + 6, r * side + 6), clips[i].caption, fill="black")
    canvas.save(path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tuned", required=True, help="the tuned or distilled stage-1 folder (`train preference`, "
                    "`train distill`)")
    ap.add_argument("--base", default=None, help="the stage it was tuned from (default: the shipped one)")
    ap.add_argument("--prompts", type=int, default=200)
    ap.add_argument("--out", default="benchmarks/results/preference_quality.md")
    ap.add_argument("--sheet", default="benchmarks/results/preference_sheet.png")
    args = ap.parse_args()
    clips = [draw_clip(777, "heldout", i) for i in range(args.prompts)]
    stages = {"base": load_t2i("tiny", args.base), "tuned": load_t2i("tiny", args.tuned)}
    images, read, seconds = {}, {}, {}
    for name, stage in stages.items():
        images[name], times = [], []
        for start in range(0, len(clips), 25):
            began = time.perf_counter()
            batch = stage([c.caption for c in clips[start : start + 25]], seed=0).images
            times.append((time.perf_counter() - began) / len(batch))
            images[name].extend(batch)
        read[name], seconds[name] = scores(images[name], clips), float(np.median(times))
    # the ceiling: the true first frames through the stage's own VAE
    vae = stages["base"].vae
    truth = torch.stack([render_frames(c.scene, 128, [0.0])[:, 0] for c in clips])
    with torch.no_grad():
        trips = torch.cat([((vae.decode(vae.encode(truth[i : i + 25] * 2 - 1).latent_dist.mode()).sample + 1) / 2)
                           .clamp(0, 1) for i in range(0, len(truth), 25)])
    everything = np.arange(len(clips))
    ceiling = accuracy(scores(list(trips), clips), everything)
    acc = {name: accuracy(s, everything) for name, s in read.items()}
    gain = paired(read["base"], read["tuned"])
    differ = [i for i in everything if read["base"]["shape"][i] != read["tuned"]["shape"][i]][:24]
    sheet(args.sheet, images["base"], images["tuned"], clips, differ)
    lines = ["# A stage 1 against the stage it was made from", "",
             f"`python benchmarks/t2i_compare.py --tuned {args.tuned}"
             + (f" --base {args.base}" if args.base else "") + f" --prompts {args.prompts}`"
             + f" ({machine()}): "
             f"{args.prompts} held-out prompts (seed 777), one image each at seed 0, defaults. Interval: 95% paired "
             "bootstrap over prompts. Ceiling: the true images through the stage's VAE, read the same way.", "",
             "| | " + " | ".join(KEYS) + " |", "|---" * (len(KEYS) + 1) + "|",
             "| VAE ceiling | " + " | ".join(f"{ceiling[k]:.3f}" for k in KEYS) + " |",
             *(f"| {name} ({stages[name].settings.sampler}, {stages[name].settings.steps} steps, guidance "
               f"{stages[name].settings.guidance:g}; {seconds[name]:.3f} s an image) | "
               + " | ".join(f"{acc[name][k]:.3f}" for k in KEYS) + " |" for name in acc),
             "| tuned - base [95%] | " + " | ".join(f"{g:+.3f} [{lo:+.3f}, {hi:+.3f}]"
                                                  for g, lo, hi in gain.values()) + " |",
             "| tuned / ceiling | " + " | ".join(f"{acc['tuned'][k] / max(ceiling[k], 1e-9):.3f}" for k in KEYS) + " |",
             "| base / ceiling | " + " | ".join(f"{acc['base'][k] / max(ceiling[k], 1e-9):.3f}" for k in KEYS) + " |",
             "", f"Contact sheet of the {len(differ)} first prompts whose shape readings differ (base left, tuned "
             f"right): `{args.sheet}`."]
    publish(args.out, lines)


if __name__ == "__main__":
    main()
