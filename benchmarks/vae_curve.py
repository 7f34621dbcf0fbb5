"""A VAE's learning curve: the ceiling's readings (benchmarks/vae_ceiling.py) against crops and
frames seen, from the EMA snapshots a `magicvideo train vae` run keeps (`snapshot_every`):

    python benchmarks/vae_curve.py RUN_DIR [--frames 100] [--sizes 64 128] [--steps 500 1000 ...]
        [--init DIR] [--out benchmarks/results/vae_curve.md]

A snapshot holds the run's trainable tensors; the rest (a decoder-only run's encoder) come from
the VAE the run started from (`init`), so each point is the VAE the run would have shipped at that
step. The first row is that starting VAE itself (`--init`: where it is now, when the run's `init`
folder has since been replaced, as a shipped folder is by the version trained from it). Frames:
the first frames of `--frames` held-out clips (test seed 4242, as the ceiling), judged for shape
with a 95% bootstrap interval, and PSNR.
A curve still rising at its end says compute is the limit.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from safetensors.torch import load_file

from magicvideo.training.common import load_config, machine
from magicvideo.training.vae import VAETrainConfig, build_vae, reconstruct
from magicvideo.world import draw_clip, render_frames
from report import publish, run_snapshots
from vae_ceiling import SEED, measure


def load_snapshot(vae: AutoencoderKL, snapshot: Path) -> None:
    """Set the run's trainable tensors kept in `snapshot`; the others stay the starting VAE's."""
    state = load_file(snapshot)
    own = vae.state_dict()
    wrong = [k for k, v in state.items() if k not in own or own[k].shape != v.shape]
    if wrong:
        raise SystemExit(f"{snapshot} does not match the run's VAE ({len(wrong)} tensors, e.g. {wrong[0]})")
    vae.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a `magicvideo train vae` output folder")
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--steps", type=int, nargs="*", help="judge only these snapshots (default: all)")
    parser.add_argument("--init", help="the VAE folder the run started from, if not where its config says")
    parser.add_argument("--out", default="benchmarks/results/vae_curve.md")
    args = parser.parse_args()
    config = load_config(VAETrainConfig, args.run / "config.yaml", {"init": args.init})
    snapshots = run_snapshots(args.run, args.steps)
    clips = [draw_clip(SEED, "heldout", i) for i in range(args.frames)]
    truth = {s: torch.stack([render_frames(c.scene, s, [0.0])[:, 0] for c in clips]) for s in args.sizes}
    started = time.perf_counter()
    # every snapshot holds the same tensors (the trainable ones), so one VAE takes them in turn
    vae = (AutoencoderKL.from_pretrained(config.init, torch_dtype=torch.float32) if config.init
           else build_vae(config)).eval()
    rows = []
    for step, path in ([(0, None)] if config.init else []) + snapshots:
        if path is not None:
            load_snapshot(vae, path)
        row = {size: measure({"vae": reconstruct(vae, frames)}, frames, clips)["vae"] for size, frames in truth.items()}
        rows.append((step, row))
        print(f"step {step}: " + ", ".join(f"{s}: shape {r['shape']:.3f} psnr {r['psnr']:.2f}"
                                           for s, r in row.items()), flush=True)
    cells = " | ".join(f"shape {s} | PSNR {s}" for s in args.sizes)
    lines = [
        "# VAE learning curve", "",
        f"Command: `python benchmarks/vae_curve.py {args.run} --frames {args.frames} --sizes "
        f"{' '.join(map(str, args.sizes))}" + (f" --steps {' '.join(map(str, args.steps))}" if args.steps else "")
        + f"` ({time.perf_counter() - started:.0f} s on {machine()}). Run: batch {config.batch_size}, lr "
        f"{config.lr}, {config.pooled_share:.0%} of each batch whole frames pooled to {config.crop}x{config.crop}, "
        f"{'encoder and decoder' if config.train_encoder else 'decoder only'}"
        + (f", from `{config.init}` (step 0)" if config.init else "")
        + (f" (`--init {args.init}`)" if args.init else "") + f". First frames of {args.frames} "
        f"held-out clips (seed {SEED}); [..] a 95% bootstrap interval over clips.", "",
        f"| step | crops and frames seen | {cells} |", "|---|---|" + "---|---|" * len(args.sizes),
    ]
    for step, row in rows:
        lines.append(f"| {step} | {step * config.batch_size:,} | " + " | ".join(
            f"{r['shape']:.3f} [{r['shape_ci'][0]:.3f}, {r['shape_ci'][1]:.3f}] | {r['psnr']:.2f}"
            for r in row.values()) + " |")
    publish(args.out, lines)


if __name__ == "__main__":
    main()
