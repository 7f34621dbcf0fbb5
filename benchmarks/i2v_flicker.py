"""Where stage 2's flicker is: drift or jitter, early or late in the clip.

    python benchmarks/i2v_flicker.py --clips 24
writes benchmarks/results/i2v_flicker.md. The judge's flicker is the mean change of background
pixels between neighbouring frames. This splits it, on held-out validation clips (seed 777, the
true first frame as the reference, each video at seed 0), for the true keyframes, the true
keyframes through the VAE, and the stage at its defaults (and without its noise prior's decay
and without its motion LoRA, where it has them):
- drift: mean |pixel - its mean over the clip|, on pixels that are background in every frame
  (slow change: a background that brightens or shifts over the clip);
- jitter: mean |x[f] - (x[f-1] + x[f+1]) / 2| on the same pixels (fast change: a pixel that
  goes up and down from frame to frame);
- the flicker of the first, middle and last third of the clip's frame pairs.
All x1000, in [0, 1] pixel units.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from magicvideo.judge.judge import object_neighbourhoods
from magicvideo.judge.segment import detect
from magicvideo.models.motion_lora import has_motion_lora
from magicvideo.presets import load_i2v
from magicvideo.training.common import machine
from magicvideo.training.vae import reconstruct
from magicvideo.world import draw_clip, render_frames
from magicvideo.world.render import frame_times
from magicvideo.world.scene import KEYFRAME_FPS
from report import publish

VALIDATION_SEED = 777


def split(video: torch.Tensor) -> tuple[np.ndarray, float, float]:
    """(3, F, H, W) in [0, 1] -> per-pair background flicker (F-1,), drift, jitter."""
    hwc = video.permute(1, 2, 3, 0).contiguous().numpy()
    near = object_neighbourhoods([detect(f) for f in hwc], hwc.shape[:3])
    keep = ~(near[1:] | near[:-1])
    diff = np.abs(hwc[1:] - hwc[:-1]).mean(-1)
    pairs = np.array([diff[i][keep[i]].mean() if keep[i].any() else np.nan for i in range(len(diff))])
    always = ~near.any(0)
    if not always.any():
        return pairs, np.nan, np.nan
    bg = hwc[:, always]  # (F, P, 3)
    drift = float(np.abs(bg - bg.mean(0, keepdims=True)).mean())
    jitter = float(np.abs(bg[1:-1] - (bg[2:] + bg[:-2]) / 2).mean())
    return pairs, drift, jitter


def row(name: str, videos: torch.Tensor) -> str:
    pairs, drift, jitter = zip(*(split(v) for v in videos))
    pairs = np.nanmean(np.stack(pairs), 0) * 1000
    thirds = [np.nanmean(part) for part in np.array_split(pairs, 3)]
    return (f"| {name} | {np.nanmean(pairs):.2f} | {np.nanmean(drift) * 1000:.2f} | {np.nanmean(jitter) * 1000:.2f} | "
            + " | ".join(f"{t:.2f}" for t in thirds) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=24, help="validation clips")
    parser.add_argument("--weights", help="a saved stage folder (default: the shipped tiny weights)")
    parser.add_argument("--out", default="benchmarks/results/i2v_flicker.md")
    args = parser.parse_args()
    stage = load_i2v("tiny", args.weights)
    s, n = stage.settings, args.clips
    clips = [draw_clip(VALIDATION_SEED, "heldout", i) for i in range(n)]
    refs = torch.stack([render_frames(c.scene, 128, [0.0])[:, 0] for c in clips])
    truth = torch.stack([render_frames(c.scene, s.size, frame_times(KEYFRAME_FPS, s.frames)) for c in clips])

    def generate(**call) -> torch.Tensor:
        return torch.cat([stage([c.caption for c in clips[i:i + 4]], refs[i:i + 4], seed=0, **call).frames
                          for i in range(0, n, 4)])

    flat = truth.permute(0, 2, 1, 3, 4).reshape(-1, 3, s.size, s.size)
    with torch.no_grad():
        through_vae = reconstruct(stage.vae, flat).reshape(n, s.frames, 3, s.size, s.size).permute(0, 2, 1, 3, 4)
    rows = [row("true keyframes", truth), row("true keyframes through the VAE", through_vae),
            row("stage, defaults", generate())]
    if s.noise_prior > 0 and s.noise_prior_decay > 0:
        rows.append(row("stage, noise prior without decay", generate(noise_prior_decay=0.0)))
    if has_motion_lora(stage.unet):
        stage.unet.disable_adapters()  # diffusers' switch for peft layers: the stage the LoRA was trained over
        rows.append(row("stage without its motion LoRA", generate()))
    lines = ["# Stage 2: where the flicker is", "",
             f"`python benchmarks/i2v_flicker.py --clips {n}"
             f"{' --weights ' + args.weights if args.weights else ''}` on {machine()}.",
             f"{n} held-out validation clips (seed {VALIDATION_SEED}), {s.frames} keyframes at {s.size}x{s.size}, "
             "the true first frame as the reference, one video per clip at seed 0. All figures x1000, in [0, 1] "
             "pixel units, on background pixels (2 px or more from any object the judge finds). Flicker: mean "
             "change between neighbouring frames (the judge's). Drift: mean distance from the pixel's mean over "
             "the clip, on pixels that are background in every frame. Jitter: mean distance from the mean of its "
             "two neighbouring frames, on the same pixels.", "",
             "| | flicker | drift | jitter | flicker, first third | middle third | last third |",
             "|---|---|---|---|---|---|---|", *rows]
    publish(args.out, lines)


if __name__ == "__main__":
    main()
