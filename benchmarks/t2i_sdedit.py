"""Does stage 1's UNet keep a shape it is given? Sampling from the truth, noised part of the way.

    python benchmarks/t2i_sdedit.py [--weights DIR] [--images 100] [--starts 100 200 400 700 999] [--guidance 4 1]
writes benchmarks/results/t2i_sdedit.md. The true images of validation prompts (held-out split,
seed 777) are encoded, noised to the sampler's step nearest below `start` (of 1,000) and sampled
from there to the end with the stage's own sampler and steps (SDEdit), with the right prompt and
with the empty one, decoded and read by the judge. Start 999 is sampling from pure noise; the
VAE's round trip is the ceiling. Where a shape that is plainly there at t 400 is lost by the end,
the UNet's own drawing loses it, whatever the text says: a drawing limit, not a binding one.
"""

from __future__ import annotations

import argparse
import sys

import torch

from magicvideo.diffusion.guidance import Guided
from magicvideo.diffusion.schedule import noise_scheduler, sampler
from magicvideo.judge.t2i import judge_images
from magicvideo.presets import load_t2i
from magicvideo.text import unet_text_inputs
from magicvideo.training.common import machine
from magicvideo.world import draw_clip, render_frames
from report import publish


@torch.no_grad()
def sdedit(stage, x0: torch.Tensor, noise: torch.Tensor, cond: torch.Tensor, empty: torch.Tensor, start: int,
           guidance: float) -> torch.Tensor:
    """Images sampled from latents x0 noised to the first of the sampler's steps at or below `start`."""
    scheduler = sampler()
    scheduler.set_timesteps(stage.settings.steps)
    steps = [t for t in scheduler.timesteps if t <= start]
    scheduler.set_begin_index(len(scheduler.timesteps) - len(steps))
    if start >= 999:
        latents = noise * scheduler.init_noise_sigma
    else:
        latents = noise_scheduler().add_noise(x0, noise, torch.full((len(x0),), int(steps[0])))
    context = torch.cat([empty, cond]) if guidance > 1 else cond
    unet, vae = stage.unet, stage.vae
    guide = Guided(lambda x, t: unet(x, t, context, **unet_text_inputs(unet, context)).sample, guidance)
    for t in steps:
        latents = scheduler.step(guide(scheduler.scale_model_input(latents, t), t), t, latents).prev_sample
    return ((vae.decode(latents / vae.config.scaling_factor).sample + 1) / 2).clamp(0, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", help="a saved stage or stage-1 LoRA folder (default: the shipped weights)")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--starts", type=int, nargs="+", default=[100, 200, 400, 700, 999])
    parser.add_argument("--guidance", type=float, nargs="+", default=[4.0, 1.0])
    parser.add_argument("--out", default="benchmarks/results/t2i_sdedit.md")
    args = parser.parse_args()
    stage = load_t2i("tiny", args.weights)
    clips = [draw_clip(777, "heldout", i) for i in range(args.images)]
    vae = stage.vae
    images = torch.stack([render_frames(c.scene, stage.settings.size, [0.0])[:, 0] for c in clips])
    with torch.no_grad():
        x0 = vae.encode(images * 2 - 1).latent_dist.mode() * vae.config.scaling_factor
        ceiling = judge_images(clips, ((vae.decode(x0 / vae.config.scaling_factor).sample + 1) / 2).clamp(0, 1))
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    prompts = {"right": stage.text_encoder([c.caption for c in clips]).hidden,
               "empty": stage.text_encoder.empty(len(clips)).hidden}
    lines = ["# Stage 1: does the UNet keep a shape it is given?", "",
             f"`python benchmarks/t2i_sdedit.py {' '.join(sys.argv[1:])}` on {machine()}; weights: "
             f"{args.weights or 'shipped'}. {args.images} validation images (held-out split, seed 777), encoded, "
             f"noised to the step at or below `start`, sampled to the end ({stage.settings.steps}-step schedule, "
             "the stage's sampler), read by the judge.", "",
             "| start | guidance | prompt | shape | colour | background |", "|---|---|---|---|---|---|"]
    a = ceiling["accuracy"]
    lines.append(f"| VAE round trip | | | {a['shape']:.3f} | {a['colour']:.3f} | {a['background']:.3f} |")
    for start in args.starts:
        for guidance in args.guidance:
            for kind in ("right", "empty") if guidance <= 1 else ("right",):
                out = sdedit(stage, x0, noise, prompts[kind], prompts["empty"], start, guidance)
                a = judge_images(clips, out)["accuracy"]
                lines.append(f"| {start} | {guidance:g} | {kind} | {a['shape']:.3f} | {a['colour']:.3f} | "
                             f"{a['background']:.3f} |")
                print(lines[-1], file=sys.stderr, flush=True)
    publish(args.out, lines)


if __name__ == "__main__":
    main()
