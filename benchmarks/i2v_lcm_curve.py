"""The learning curve of a few-step stage-2 student (`magicvideo train distill-i2v`): each EMA
snapshot of the run, sampled by LCM in N steps without guidance, judged on held-out clips beside
its teacher at the teacher's defaults, with 95% paired bootstrap intervals of student minus teacher.

    python benchmarks/i2v_lcm_curve.py runs/lcm_i2v --clips 100 --sample-steps 4
    python benchmarks/i2v_lcm_curve.py runs/lcm_i2v --steps 500 1000 --sample-steps 2 4 8
    python benchmarks/i2v_lcm_curve.py runs/lcm_i2v --timesteps 999 499 199 59   # 4 steps at these

Validation clips (seed 777) by default: where a run is judged while it trains; `--split test` once,
for the shipped student. The teacher's per-clip readings are kept in the run folder
(`teacher_<split>_<clips>.json`), so later calls judge only the snapshots. Run from the repository root.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

from report import publish, run_snapshots
from vs_diffusers import FRAME_SHARES, SHARES, SPLITS, against

ROW = ("motion", "shape", "colour", "all", "frame_shape", "first_frame_psnr", "flicker_ratio")


def readings(report: dict) -> dict:
    return {"readings": {**{k: report["accuracy"][k] for k in SHARES}, **{k: report[k] for k in FRAME_SHARES},
                         "first_frame_psnr": report["first_frame_psnr"], "flicker_ratio": report["flicker_ratio"],
                         "seconds_per_clip": report["seconds_per_clip"]},
            "per_clip": report["per_clip"], "truth_flicker": report["ground_truth_flicker"]}


def cells(r: dict, gap: dict | None) -> str:
    """A row's readings as table cells, each with its paired interval where `gap` has one."""
    out = []
    for key in ROW:
        value = r["readings"][key]
        out.append(("-" if value is None else f"{value:.3f}")
                   + (f" [{gap[key][1]:+.3f}, {gap[key][2]:+.3f}]" if gap else ""))
    return " | ".join(out)


def student(config: dict, snapshot: Path, steps: int):
    """The teacher stage with the snapshot's LoRA fused in, sampling as the student's folder does
    (at the config's `sample_timesteps` where `steps` is their count)."""
    from magicvideo.device import Placement
    from magicvideo.models.lora import attach_lora, fuse_lora
    from magicvideo.presets import load_i2v
    from magicvideo.stages.i2v import LORA_NAME
    from magicvideo.training.distill_i2v import TARGETS

    stage = load_i2v("tiny", config.get("teacher") or None)
    fuse_lora(stage.unet)  # the motion LoRA, as the trainer did before attaching its own
    attach_lora(stage.unet, LORA_NAME, TARGETS, int(config["lora"]))
    weights = {k.removeprefix("unet."): v.float() for k, v in load_file(snapshot).items()}
    missing = stage.unet.load_state_dict(weights, strict=False).unexpected_keys
    if missing:
        raise SystemExit(f"{snapshot} does not match this student ({len(missing)} unexpected weights)")
    stage.place(Placement(device="cpu"))
    plan = tuple(config.get("sample_timesteps") or ())
    stage.settings = stage.settings.merged(sampler="lcm", steps=steps, guidance=1.0,
                                           lcm_timesteps=plan if len(plan) == steps else None)
    return stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a `magicvideo train distill-i2v` run folder")
    parser.add_argument("--steps", type=int, nargs="*", help="snapshots to judge (default: all)")
    parser.add_argument("--sample-steps", type=int, nargs="*", default=[4], help="LCM steps of the student")
    parser.add_argument("--timesteps", type=int, nargs="*",
                        help="the student's LCM timesteps (default: the run config's sample_timesteps)")
    parser.add_argument("--clips", type=int, default=100)
    parser.add_argument("--split", choices=tuple(SPLITS), default="validation")
    parser.add_argument("--out", help="markdown table (default: benchmarks/results/i2v_lcm_curve.md)")
    parser.add_argument("--teacher-only", action="store_true", help="only judge the teacher (kept for later calls)")
    args = parser.parse_args()
    from magicvideo.judge.i2v import evaluate_i2v
    from magicvideo.presets import load_i2v
    from magicvideo.training.common import machine

    config = yaml.safe_load((args.run / "config.yaml").read_text())
    if args.timesteps is not None:
        config["sample_timesteps"] = args.timesteps
    snapshots = run_snapshots(args.run, args.steps)
    kept = args.run / f"teacher_{args.split}_{args.clips}.json"
    if kept.is_file():
        teacher = json.loads(kept.read_text())
    else:
        teacher = readings(evaluate_i2v(load_i2v("tiny", config.get("teacher") or None), args.clips,
                                        SPLITS[args.split], progress=False))
        kept.write_text(json.dumps(teacher))
    if args.teacher_only:
        print(json.dumps(teacher["readings"]))
        return
    lines = [f"# Few-step stage 2: the learning curve of {args.run}", "",
             f"`python benchmarks/i2v_lcm_curve.py {' '.join(sys.argv[1:])}` on {machine()}, CPU, fp32.",
             f"{args.clips} held-out clips ({args.split}), the true first frame as the reference, seed 0. The student "
             f"samples by LCM without guidance; the teacher at its defaults. [..]: 95% paired bootstrap interval "
             "of student minus teacher over clips.", "",
             "| snapshot step | clips seen | sampler steps | " + " | ".join(ROW) + " | seconds per clip |",
             "|---" * (len(ROW) + 4) + "|"]

    def row(name: str, seen: str, steps: str, r: dict, gap: dict | None) -> str:
        return f"| {name} | {seen} | {steps} | {cells(r, gap)} | {r['readings']['seconds_per_clip']:.2f} |"

    lines.append(row("teacher", "-", "20, guided", teacher, None))
    for step, path in snapshots:
        for n in args.sample_steps:
            torch.manual_seed(0)
            r = readings(evaluate_i2v(student(config, path, n), args.clips, SPLITS[args.split], progress=False))
            gap = against(r["per_clip"], teacher["per_clip"], teacher["truth_flicker"])
            plan = config.get("sample_timesteps") or []
            steps = f"{n} at {', '.join(map(str, plan))}" if len(plan) == n else str(n)
            lines.append(row(str(step), f"{step * int(config['batch_size']):,}", steps, r, gap))
            print(json.dumps({"step": step, "sample_steps": n, **r["readings"],
                              "vs_teacher": gap}), flush=True)
    publish(args.out or "benchmarks/results/i2v_lcm_curve.md", lines)


if __name__ == "__main__":
    main()
