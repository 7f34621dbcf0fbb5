"""Stage 2 quality, ablations and speed: stage 2's bar on held-out clips.

    python benchmarks/i2v_quality.py --clips 200 [--no-image-batches runs/i2v_videos_only/final]
writes benchmarks/results/i2v_quality.md (`--sections` runs a part of it, `--out` elsewhere):
- ceilings: the judge on the true 64x64 keyframes, and on their round trips through the VAE;
- a validation sweep (separate held-out clips, seed 777) over noise prior strength x its decay x
  guidance scale x motion guidance x motion text scale x ControlNet scale, where the stage's
  defaults are chosen, never on the reported set;
- the ablation table on the reported clips (seed 4242, ground-truth first frame as the
  reference, seed 0 for every clip): the full stage, then without each mechanism (motion text
  attention too, for a stage that has it), and where the full stage's motion errors go;
  `--rows` measures some of its rows (a quarter of an hour each for 200 clips on a CPU);
- image-batches: the ablation table's last row alone (the stage trained without image batches,
  sampled with the full stage's settings), for when the other rows are measured already;
- seconds per clip on this machine (median of 5; one clip, and per clip in a batch of 4).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time

import torch

from magicvideo.judge.i2v import evaluate_i2v, ground_truth
from magicvideo.models.motion_text import motion_text_processors
from magicvideo.presets import load_i2v
from magicvideo.training.common import machine
from magicvideo.world import draw_clip, render_frames
from magicvideo.world.vocab import MOTIONS
from report import publish

TEST_SEED, VALIDATION_SEED = 4242, 777
SECTIONS = ("ceilings", "sweep", "ablations", "image-batches", "speed")
ABLATIONS = ("full", "appearance", "noise-prior", "controlnet", "decay", "motion-guidance", "motion-text",
             "image-batches")
HEADER = ["| | motion | shape | colour | all | frames: shape | frames: colour | first-frame PSNR | flicker ratio |",
          "|---|---|---|---|---|---|---|---|---|"]


def row(name: str, r: dict) -> str:
    a = r["accuracy"]
    return (f"| {name} | {a['motion']:.3f} | {a['shape']:.3f} | {a['colour']:.3f} | {a['all']:.3f} | "
            f"{r['frame_shape']:.3f} | {r['frame_colour']:.3f} | {r['first_frame_psnr']:.2f} dB | "
            f"{r['flicker_ratio']:.2f} |")


def confusion(r: dict) -> list[str]:
    """The judge's motion readings against the captions' motions, as a table (rows: asked)."""
    table = r["motion_confusion"]
    read = [*MOTIONS, "not found"]
    lines = ["| asked \\ read | objects | right | " + " | ".join(read) + " |", "|---" * (len(read) + 3) + "|"]
    for asked in MOTIONS:
        cells = table.get(asked, {})
        total = sum(cells.values())
        if total:
            lines.append(f"| {asked} | {total} | {cells.get(asked, 0) / total:.2f} | "
                         + " | ".join(str(cells.get(m, 0)) for m in read) + " |")
    return lines


def seconds_per_clip(stage, batch: int) -> float:
    clips = [draw_clip(TEST_SEED, "heldout", i) for i in range(batch)]
    refs = torch.stack([render_frames(c.scene, 128, [0.0])[:, 0] for c in clips])
    captions = [c.caption for c in clips]
    stage(captions[:1], refs[:1])  # warm-up
    times = []
    for _ in range(5):
        start = time.perf_counter()
        stage(captions, refs)
        times.append((time.perf_counter() - start) / batch)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=200, help="reported held-out clips per row")
    parser.add_argument("--sweep-clips", type=int, default=50, help="validation clips per sweep point")
    parser.add_argument("--noise-prior", type=float, nargs="+", default=[0.0, 0.2, 0.4, 0.6])
    parser.add_argument("--guidance", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    parser.add_argument("--noise-prior-decay", type=float, nargs="+", help="sweep values (default: the stage's)")
    parser.add_argument("--motion-text-scale", type=float, nargs="+",
                        help="sweep values, for a stage with motion text attention (default: the stage's)")
    parser.add_argument("--motion-guidance", type=float, nargs="+", help="sweep values (default: the stage's)")
    parser.add_argument("--controlnet-scale", type=float, nargs="+", help="sweep values (default: the stage's)")
    parser.add_argument("--steps", type=int, nargs="+", help="sampling steps, sweep values (default: the stage's)")
    parser.add_argument("--weights", help="a saved stage folder (default: the shipped tiny weights)")
    parser.add_argument("--no-image-batches", help="a stage trained with image_every: 0, for its ablation row")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--rows", nargs="+", choices=ABLATIONS,
                        help="which ablation rows to measure (default: all that apply to the stage)")
    parser.add_argument("--out", default="benchmarks/results/i2v_quality.md")
    args = parser.parse_args()
    stage = load_i2v("tiny", args.weights)
    s, n, m = stage.settings, args.clips, args.sweep_clips

    def videos_only():
        """The stage trained with image_every: 0, sampled with the full stage's settings (its own
        stage.json has the trainer's defaults), so the row differs from the full one in training alone."""
        other = load_i2v("tiny", args.no_image_batches)
        other.settings = s
        return other

    def ceiling(vae) -> dict:
        return evaluate_i2v(None, n, TEST_SEED, size=s.size, generate=ground_truth(s.size, s.frames, vae),
                            progress=False)

    lines = ["# Stage 2: image-to-video (tiny preset)", "",
             f"`python benchmarks/i2v_quality.py {' '.join(sys.argv[1:])}` on {machine()}.",
             f"Defaults: {s.frames} keyframes at {s.size}x{s.size}, {s.steps} DPM-Solver++ steps, guidance "
             f"{s.guidance:g} (on the text), noise prior {s.noise_prior:g} (decay {s.noise_prior_decay:g}), appearance "
             f"scale {s.appearance_scale:g}, motion text scale {s.motion_text_scale:g}, "
             f"motion guidance {s.motion_guidance:g}, ControlNet scale {s.controlnet_scale:g}. "
             "Reference image: the ground-truth first frame (rendered at 128x128); one video per clip at seed 0. "
             "Clip-level columns: the judge's reading of the whole clip (motion: direction and kind); frame "
             "columns: the share of objects whose shape / colour is read right, frame by frame; flicker ratio: "
             "the videos' mean flicker over the ground truth's (1 = as steady as the truth).", ""]
    if "ceilings" in args.sections:
        lines += ["## Ceilings", "", *HEADER, row("true keyframes", ceiling(None)),
                  row("true keyframes through the VAE", ceiling(stage.vae)), ""]
    if "sweep" in args.sections:
        lines += [f"## Validation sweep ({m} held-out clips, seed {VALIDATION_SEED})", "", *HEADER]
        texts, decays = args.motion_text_scale or [s.motion_text_scale], args.noise_prior_decay or [s.noise_prior_decay]
        grid = itertools.product(args.guidance, args.motion_guidance or [s.motion_guidance], texts, decays,
                                 args.noise_prior, args.controlnet_scale or [s.controlnet_scale],
                                 args.steps or [s.steps])
        for g, mg, text, decay, strength, cn, steps in grid:
            extra = {"motion_text_scale": text} if motion_text_processors(stage.unet) else {}
            r = evaluate_i2v(stage, m, VALIDATION_SEED, noise_prior=strength, noise_prior_decay=decay,
                             guidance=g, motion_guidance=mg, controlnet_scale=cn, steps=steps, progress=False,
                             **extra)
            lines.append(row(f"noise prior {strength:g} (decay {decay:g}), guidance {g:g}, motion guidance {mg:g}"
                             + (f", motion text scale {text:g}" if extra else "") + f", ControlNet scale {cn:g}"
                             + (f", {steps} steps" if args.steps else ""), r))
            print(lines[-1], flush=True)  # a long sweep shows its rows as they come
        lines.append("")
    if "ablations" in args.sections:
        prior_row = ("without noise prior (strength 0)", 0.0) if s.noise_prior > 0 else (
            f"with noise prior {max(args.noise_prior):g} (the default is 0)", max(args.noise_prior))
        rows = {"full": ("full stage (defaults)", {}),
                "appearance": ("without appearance encoder (scale 0)", {"appearance_scale": 0.0}),
                "noise-prior": (prior_row[0], {"noise_prior": prior_row[1]}),
                "controlnet": ("without ControlNet", {"use_controlnet": False})}
        if s.noise_prior > 0 and s.noise_prior_decay > 0:
            rows["decay"] = (f"noise prior {s.noise_prior:g} without decay (every frame alike)",
                             {"noise_prior_decay": 0.0})
        if s.motion_guidance:
            rows["motion-guidance"] = ("without motion guidance (0)", {"motion_guidance": 0.0})
        if motion_text_processors(stage.unet):
            rows["motion-text"] = ("without motion text attention (scale 0)", {"motion_text_scale": 0.0})
        lines += [f"## Ablations ({n} held-out clips, seed {TEST_SEED})", "", *HEADER]
        full = None
        for key, (name, settings) in rows.items():
            if args.rows and key not in args.rows:
                continue
            r = evaluate_i2v(stage, n, TEST_SEED, **settings)
            full = r if key == "full" else full
            lines.append(row(name, r))
            print(lines[-1], flush=True)  # 200 clips take a quarter of an hour per row on a CPU
        if args.no_image_batches and (not args.rows or "image-batches" in args.rows):
            lines.append(row("trained without image batches", evaluate_i2v(videos_only(), n, TEST_SEED)))
        elif not args.rows:
            lines.append("| trained without image batches | not measured in this run (needs --no-image-batches) |"
                         " | | | | | | |")
        if full is not None:
            lines += ["", "Where the full stage's motion goes: objects per motion asked (the caption) and read (the "
                      "judge), on the same clips.", "", *confusion(full), ""]
    if "image-batches" in args.sections:
        if not args.no_image_batches:
            parser.error("--sections image-batches needs --no-image-batches DIR")
        lines += [f"## Trained without image batches ({n} held-out clips, seed {TEST_SEED})", "", *HEADER,
                  row("trained without image batches", evaluate_i2v(videos_only(), n, TEST_SEED)), ""]
    if "speed" in args.sections:
        lines += ["## Speed", "", "| batch | seconds per clip |", "|---|---|",
                  f"| 1 | {seconds_per_clip(stage, 1):.2f} |", f"| 4 | {seconds_per_clip(stage, 4):.2f} |"]
    publish(args.out, lines)


if __name__ == "__main__":
    main()
