"""Compare VAE folders on what the stages need from them (held-out clips, seed 4242):

    python benchmarks/vae_compare.py --clips 100 OLD_VAE_DIR NEW_VAE_DIR

PSNR of held-out frames at 128x128 and 64x64; the judge on round trips of the 128x128
reference images (shape, all); the judge on round trips of 16 keyframes at 64x64 (shapes
right per frame, motion, all, flicker over the truth's). Prints one line per folder.
"""

from __future__ import annotations

import argparse

import torch
from diffusers import AutoencoderKL

from magicvideo.judge.i2v import evaluate_i2v, ground_truth
from magicvideo.judge.judge import Expected, aggregate, read_clip, score_clip
from magicvideo.judge.metrics import psnr
from magicvideo.training.vae import reconstruct, world_frames
from magicvideo.world import draw_clip, render_frames

SEED = 4242


def measure(vae: AutoencoderKL, n: int) -> dict:
    out = {}
    for size in (128, 64):
        frames = world_frames(SEED, "heldout", n, size, progress=False).float() / 255
        out[f"psnr_{size}"] = round(psnr(reconstruct(vae, frames), frames), 2)
    clips = [draw_clip(SEED, "heldout", i) for i in range(n)]
    images = torch.stack([render_frames(c.scene, 128, [0.0])[:, 0] for c in clips])
    scores, readings = [], []
    for clip, image in zip(clips, reconstruct(vae, images)):
        reading = read_clip(image)
        expected = Expected([(o.shape, o.colour, None) for o in clip.scene.objects], clip.scene.background)
        scores.append(score_clip(reading, expected))
        readings.append(reading)
    a = aggregate(scores, readings)["accuracy"]
    out["reference_128"] = {"shape": round(a["shape"], 3), "all": round(a["all"], 3)}
    r = evaluate_i2v(None, n, SEED, size=64, generate=ground_truth(64, 16, vae), progress=False)
    out["keyframes_64"] = {"frame_shape": round(float(r["frame_shape"]), 3),
                           "motion": round(r["accuracy"]["motion"], 3), "all": round(r["accuracy"]["all"], 3),
                           "flicker_ratio": round(r["flicker_ratio"], 2)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", help="VAE folders (diffusers AutoencoderKL)")
    parser.add_argument("--clips", type=int, default=100)
    args = parser.parse_args()
    for folder in args.folders:
        vae = AutoencoderKL.from_pretrained(folder, torch_dtype=torch.float32).eval()
        print(folder, measure(vae, args.clips), flush=True)


if __name__ == "__main__":
    main()
