"""Stage 1 quality and speed: the VAE's reconstruction, and the judge's accuracy on T2I images.

    python benchmarks/t2i_quality.py --prompts 200
writes benchmarks/results/t2i_quality.md:
- VAE: PSNR of held-out frames at 128x128 and 64x64, and the judge on VAE round trips of the
  ground-truth reference images (the ceiling any latent T2I model can reach);
- T2I at the default steps and guidance on held-out prompts (seed 4242) and train prompts,
  the held-out ones broken down by which unseen phrasing they use;
- accuracy against guidance and steps, on a separate validation set of held-out prompts
  (seed 777): the defaults were chosen there, never on the reported set;
- seconds per image on this machine (median of 5, one prompt; and per image in a batch of 25).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from magicvideo.judge.metrics import psnr
from magicvideo.judge.t2i import evaluate_t2i, ground_truth_accuracy, judge_images
from magicvideo.presets import load_t2i
from magicvideo.stages.t2i import TextToImage
from magicvideo.training.common import machine
from magicvideo.training.vae import reconstruct, world_frames
from magicvideo.world import draw_clip, render_frames
from report import publish

TEST_SEED, VALIDATION_SEED = 4242, 777


def _acc(report: dict) -> str:
    a = report["accuracy"]
    return f"{a['shape']:.3f} | {a['colour']:.3f} | {a['background']:.3f} | {a['all']:.3f}"


def vae_rows(stage: TextToImage, count: int) -> list[str]:
    rows = []
    for size in (128, 64):
        frames = world_frames(TEST_SEED, "heldout", count, size, progress=False).float() / 255
        value = psnr(reconstruct(stage.vae, frames), frames)
        rows.append(f"| PSNR at {size}x{size}, {count} held-out frames | {value:.2f} dB |")
    clips = [draw_clip(TEST_SEED, "heldout", i) for i in range(count)]
    images = torch.stack([render_frames(c.scene, 128, [0.0])[:, 0] for c in clips])
    a = judge_images(clips, reconstruct(stage.vae, images))["accuracy"]
    rows.append(f"| judge on VAE round trips of {count} held-out reference images (shape / colour / background / all) "
                f"| {a['shape']:.3f} / {a['colour']:.3f} / {a['background']:.3f} / {a['all']:.3f} |")
    return rows


def seconds_per_image(stage: TextToImage, batch: int) -> float:
    prompts = [draw_clip(TEST_SEED, "heldout", i).caption for i in range(batch)]
    stage(prompts[:1])  # warm-up
    times = []
    for _ in range(5):
        start = time.perf_counter()
        stage(prompts)
        times.append((time.perf_counter() - start) / batch)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=200, help="held-out and train prompts at the defaults")
    parser.add_argument("--sweep-prompts", type=int, default=100, help="validation prompts per sweep point")
    parser.add_argument("--guidance", type=float, nargs="+", default=[1.0, 2.0, 3.0, 4.0, 6.0, 8.0])
    parser.add_argument("--steps", type=int, nargs="+", default=[5, 10, 20, 30, 50])
    parser.add_argument("--weights", help="a saved stage folder (default: the shipped tiny weights)")
    parser.add_argument("--out", default="benchmarks/results/t2i_quality.md")
    args = parser.parse_args()
    stage = load_t2i("tiny", args.weights)
    s = stage.settings
    n = args.prompts
    lines = ["# Stage 1: VAE and text-to-image (tiny preset)", "",
             f"`python benchmarks/t2i_quality.py --prompts {n} --sweep-prompts {args.sweep_prompts} "
             f"--guidance {' '.join(f'{g:g}' for g in args.guidance)} --steps {' '.join(map(str, args.steps))}"
             f"{' --weights ' + args.weights if args.weights else ''}` on {machine()}.",
             f"Defaults: {s.steps} DPM-Solver++ steps, guidance {s.guidance:g}, {s.size}x{s.size}, "
             "one image per prompt at seed 0.", "",
             "## VAE", "", "| measure | value |", "|---|---|", *vae_rows(stage, n), ""]
    header = ["| prompts | n | shape | colour | background | all |", "|---|---|---|---|---|---|"]
    gt = ground_truth_accuracy("heldout", n, TEST_SEED)
    held = evaluate_t2i(stage, "heldout", n, TEST_SEED, progress=True)
    train = evaluate_t2i(stage, "train", n, TEST_SEED, progress=True)
    lines += ["## Text-to-image, judged", "", *header,
              f"| ground-truth renders of the held-out prompts (judge ceiling) | {n} | {gt['shape']:.3f} | "
              f"{gt['colour']:.3f} | {gt['background']:.3f} | {gt['all']:.3f} |",
              f"| held-out (unseen combinations and phrasings) | {n} | {_acc(held)} |",
              f"| train | {n} | {_acc(train)} |", "",
              "Held-out prompts by the unseen phrasing they contain (a prompt can count in several rows):", "",
              *header]
    for part, a in held["by_unseen_phrasing"].items():
        lines.append(f"| {part} | {a['prompts']} | {a['shape']:.3f} | {a['colour']:.3f} | {a['background']:.3f} | "
                     f"{a['all']:.3f} |")
    m = args.sweep_prompts
    lines += ["", f"## Guidance and steps ({m} validation held-out prompts, seed {VALIDATION_SEED})", "",
              f"Guidance at {s.steps} steps:", "", "| guidance | shape | colour | background | all |",
              "|---|---|---|---|---|"]
    for g in args.guidance:
        r = evaluate_t2i(stage, "heldout", m, VALIDATION_SEED, guidance=g, progress=False)
        lines.append(f"| {g:g} | {_acc(r)} |")
    lines += ["", f"Steps at guidance {s.guidance:g}:", "", "| steps | shape | colour | background | all |",
              "|---|---|---|---|---|"]
    for steps in args.steps:
        r = evaluate_t2i(stage, "heldout", m, VALIDATION_SEED, steps=steps, progress=False)
        lines.append(f"| {steps} | {_acc(r)} |")
    lines += ["", "## Speed", "", "| batch | seconds per image |", "|---|---|",
              f"| 1 | {seconds_per_image(stage, 1):.3f} |", f"| 25 | {seconds_per_image(stage, 25):.3f} |"]
    publish(args.out, lines)


if __name__ == "__main__":
    main()
