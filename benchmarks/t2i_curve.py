"""Stage 1's learning curve: the judge's readings against training images seen, from the EMA
snapshots a `magicvideo train t2i` run keeps (`snapshot_every` in its config):

    python benchmarks/t2i_curve.py RUN_DIR [--prompts 100] [--steps 400 800 ...] [--guidance G]
        [--out benchmarks/results/t2i_curve.md] [--sheet SHEET.png]

Each snapshot is sampled on the first `--prompts` validation prompts (held-out split, seed 777),
one image each at seed 0, with the stage's default steps and guidance (or --guidance). A curve
still rising at its end says compute is the limit; one flat below the bar says capacity or
conditioning is. `--sheet` also writes a contact sheet to look at by eye: the true images of the
first 8 validation prompts on top, then one row per snapshot, earliest first.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from PIL import Image

from magicvideo.judge.t2i import evaluate_t2i
from magicvideo.latent import vae_factor
from magicvideo.presets.tiny import TINY_VAE
from magicvideo.stages.t2i import T2ISettings, TextToImage
from magicvideo.text import MiniLMTextEncoder
from magicvideo.training.common import load_config, machine
from magicvideo.training.t2i import T2ITrainConfig, snapshot_unet
from magicvideo.world import draw_clip, render_frames
from report import publish, run_snapshots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a `magicvideo train t2i` output folder")
    parser.add_argument("--prompts", type=int, default=100)
    parser.add_argument("--steps", type=int, nargs="*", help="judge only these snapshots (default: all)")
    parser.add_argument("--guidance", type=float, help="classifier-free guidance (default: the stage's)")
    parser.add_argument("--out", default="benchmarks/results/t2i_curve.md")
    parser.add_argument("--sheet", help="also write a contact sheet (PNG) of 8 prompts, one row per snapshot")
    args = parser.parse_args()
    config = load_config(T2ITrainConfig, args.run / "config.yaml")
    snapshots = run_snapshots(args.run, args.steps)
    vae = AutoencoderKL.from_pretrained(config.vae or TINY_VAE, torch_dtype=torch.float32)
    text = MiniLMTextEncoder.from_pretrained(max_tokens=config.max_tokens)
    started = time.perf_counter()
    rows = []
    sheet_clips = [draw_clip(777, "heldout", i) for i in range(8)] if args.sheet else []
    truth = [render_frames(c.scene, config.size, [0.0])[:, 0] for c in sheet_clips]
    sheet = [torch.cat(truth, 2)] if truth else []  # the truth on top
    for step, path in snapshots:
        unet = snapshot_unet(config, config.size // vae_factor(vae), path)
        stage = TextToImage(unet, vae, text, T2ISettings(size=config.size))
        report = evaluate_t2i(stage, "heldout", args.prompts, seed=777, guidance=args.guidance, progress=False)
        a = report["accuracy"] | {"found": report["count"]["found"], "named": report["count"]["named"],
                                  "by_shape": report["by_shape"]}
        rows.append((step, step * config.batch_size, a))
        if args.sheet:
            images = stage([c.caption for c in sheet_clips], seed=0, guidance=args.guidance).images
            sheet.append(torch.cat(list(images), 2))
        print(f"step {step}: {a}", flush=True)
    lines = [
        "# Stage 1 learning curve", "",
        f"Command: `python benchmarks/t2i_curve.py {args.run} --prompts {args.prompts}"
        + (f" --steps {' '.join(map(str, args.steps))}" if args.steps else "")
        + (f" --guidance {args.guidance:g}" if args.guidance is not None else "") + "` "
        f"({time.perf_counter() - started:.0f} s on {machine()}). Run config: widths {list(config.widths)}, "
        f"attention levels {list(config.attention) or 'all but the deepest'}, batch {config.batch_size}, "
        f"lr {config.lr}, VAE `{config.vae or 'weights/tiny/vae'}`. {args.prompts} validation prompts "
        "(held-out split, seed 777), one image each at seed 0, default steps, guidance "
        f"{args.guidance if args.guidance is not None else T2ISettings().guidance:g}.", "",
        "| step | images seen | shape | colour | background | all | objects found / named per image "
        "| shape right by the shape asked |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for step, seen, a in rows:
        shapes = ", ".join(f"{k} {v:.2f}" for k, v in a["by_shape"].items())
        lines.append(f"| {step} | {seen:,} | {a['shape']:.3f} | {a['colour']:.3f} | {a['background']:.3f} "
                     f"| {a['all']:.3f} | {a['found']:.2f} / {a['named']:.2f} | {shapes} |")
    if args.sheet:
        grid = (torch.cat(sheet, 1).permute(1, 2, 0) * 255).round().byte().numpy()
        Image.fromarray(grid).save(args.sheet)
        lines += ["", f"Contact sheet: `{args.sheet}` (the truth on top, then step "
                  f"{', '.join(str(s) for s, _, _ in rows)}; prompts 0-7)."]
    publish(args.out, lines)


if __name__ == "__main__":
    main()
