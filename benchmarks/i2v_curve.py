"""The learning curve of a stage-2 run (`magicvideo train i2v`): each EMA snapshot, and the run's
`final` when it has one, judged on held-out clips at the stage's defaults, beside the shipped
stage 2 (95% paired bootstrap intervals of the run minus the shipped stage) and beside the ceiling
of the run's own VAE (the true keyframes through it).

    python benchmarks/i2v_curve.py runs/i2v4x --clips 40
    python benchmarks/i2v_curve.py runs/i2v4x --steps 400 800 --clips 100
    python benchmarks/i2v_curve.py runs/i2v4x --final --clips 40
    python benchmarks/i2v_curve.py runs/i2v4x --steps 3200 --set noise_prior=0.3 noise_prior_decay=1

Validation clips (seed 777) by default: where a run is judged while it trains; `--split test` once,
for what ships. The shipped stage's and the ceiling's per-clip readings are kept in the run folder
(`shipped_<split>_<clips>.json`, `ceiling_<split>_<clips>.json`), so later calls judge only the
run. Run from the repository root.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from i2v_lcm_curve import ROW, cells, readings
from report import publish, run_snapshots
from vs_diffusers import SPLITS, against


def run_stage(run: Path, snapshot: Path | None):
    """The run's stage as its trainer builds it (a fine-tune's from its `init`), with a snapshot's
    EMA weights (or its `final`)."""
    from diffusers import AutoencoderKL

    from magicvideo.presets import load_i2v
    from magicvideo.presets.tiny import TINY_UNET_VAE
    from magicvideo.text import MiniLMTextEncoder
    from magicvideo.training.common import load_config
    from magicvideo.training.i2v import I2VModules, I2VTrainConfig, initial_stage

    if snapshot is None:
        return load_i2v("tiny", str(run / "final"))
    config = load_config(I2VTrainConfig, run / "config.yaml")
    stage = initial_stage(config, AutoencoderKL.from_pretrained(config.vae or TINY_UNET_VAE, torch_dtype=torch.float32),
                          MiniLMTextEncoder.from_pretrained(max_tokens=config.max_tokens))
    unexpected = I2VModules(stage).load_state_dict(
        {k: v.float() for k, v in load_file(snapshot).items()}, strict=False).unexpected_keys
    if unexpected:
        raise SystemExit(f"{snapshot} does not match the run's stage (e.g. {unexpected[0]})")
    for model in (stage.unet, stage.appearance, stage.controlnet):
        if model is not None:
            model.requires_grad_(False).eval()
    return stage


def seen(config, step: int) -> str:
    """What `step` training steps showed: clips in video batches, single frames in image batches."""
    images = step // config.image_every if config.image_every else 0
    return f"{(step - images) * config.batch_size:,} clips, {images * config.image_batch_size:,} frames"


def kept(path: Path, judge) -> dict:
    if path.is_file():
        return json.loads(path.read_text())
    result = judge()
    path.write_text(json.dumps(result))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a `magicvideo train i2v` run folder")
    parser.add_argument("--steps", type=int, nargs="*", help="snapshots to judge (default: all, and final)")
    parser.add_argument("--final", action="store_true", help="judge only the run's final, no snapshots")
    parser.add_argument("--clips", type=int, default=100)
    parser.add_argument("--split", choices=tuple(SPLITS), default="validation")
    parser.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE",
                        help="sampling settings over each snapshot's (e.g. noise_prior=0.3): a sweep on validation")
    parser.add_argument("--out", help="markdown table (default: benchmarks/results/i2v_curve.md)")
    args = parser.parse_args()
    from diffusers import AutoencoderKL

    from magicvideo.judge.i2v import evaluate_i2v, ground_truth
    from magicvideo.presets import load_i2v
    from magicvideo.presets.tiny import TINY_UNET_VAE
    from magicvideo.settings import I2VSettings
    from magicvideo.training.common import load_config, machine
    from magicvideo.training.i2v import I2VTrainConfig

    config = load_config(I2VTrainConfig, args.run / "config.yaml")
    try:
        overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    except ValueError:
        raise SystemExit(f"--set takes NAME=VALUE with a JSON value, got {args.set}") from None
    seed = SPLITS[args.split]
    shipped = kept(args.run / f"shipped_{args.split}_{args.clips}.json",
                   lambda: readings(evaluate_i2v(load_i2v("tiny"), args.clips, seed, progress=False)))
    vae = AutoencoderKL.from_pretrained(config.vae or TINY_UNET_VAE, torch_dtype=torch.float32).eval()
    ceiling = kept(args.run / f"ceiling_{args.split}_{args.clips}.json",
                   lambda: readings(evaluate_i2v(None, args.clips, seed, size=config.size, frames=config.frames,
                                                 generate=ground_truth(config.size, config.frames, vae),
                                                 progress=False)))
    rows = [] if args.final else [(step, path) for step, path in run_snapshots(args.run, args.steps)]
    if not args.steps and (args.run / "final").is_dir():
        rows.append(("final", None))
    lines = [f"# Stage 2: the learning curve of {args.run}", "",
             f"`python benchmarks/i2v_curve.py {' '.join(sys.argv[1:])}` on {machine()}, CPU, fp32.",
             *([f"The run's rows sample with {overrides} over their stage's settings."] if overrides else []),
             f"{args.clips} held-out clips ({args.split}), the true first frame as the reference, seed 0, each "
             "stage at its defaults. [..]: 95% paired bootstrap interval of the run minus the shipped stage "
             "over clips. Ceiling: the true keyframes through the run's VAE.", "",
             "| row | seen | " + " | ".join(ROW) + " | seconds per clip |", "|---" * (len(ROW) + 3) + "|"]

    def row(name: str, seen: str, r: dict, gap: dict | None) -> str:
        return f"| {name} | {seen} | {cells(r, gap)} | {r['readings']['seconds_per_clip']:.2f} |"

    lines += [row("ceiling (the truth through the run's VAE)", "-", ceiling, None),
              row("shipped stage 2", "-", shipped, None)]
    for step, path in rows:
        torch.manual_seed(0)
        stage = run_stage(args.run, path)
        stage.settings = I2VSettings.from_dict(vars(stage.settings) | overrides)
        r = readings(evaluate_i2v(stage, args.clips, seed, progress=False))
        gap = against(r["per_clip"], shipped["per_clip"], shipped["truth_flicker"])
        lines.append(row(str(step), seen(config, step) if isinstance(step, int) else "-", r, gap))
        print(json.dumps({"step": step, **r["readings"], "vs_shipped": gap}), flush=True)
    publish(args.out or "benchmarks/results/i2v_curve.md", lines)


if __name__ == "__main__":
    main()
