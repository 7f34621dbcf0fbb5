"""Stage 2 (image-to-video) against diffusers' own AnimateDiffControlNetPipeline on the same
weights: seconds, peak memory and the judge's readings, one JSON line per row, in one run.

    python benchmarks/vs_diffusers.py --preset tiny                        # the shipped tiny stage 2
    python benchmarks/vs_diffusers.py --preset tiny --dtype bf16 --cache 2 3
    python benchmarks/vs_diffusers.py --preset tiny --cache --also-dtype bf16   # bf16 judged against fp32
    python benchmarks/vs_diffusers.py --preset tiny --no-controlnet       # against AnimateDiffPipeline
    python benchmarks/vs_diffusers.py --student runs/lcm_i2v/final --student-steps 2 4 8 --cache
    magicvideo random-weights /tmp/sd15
    python benchmarks/vs_diffusers.py --preset sd15 --weights /tmp/sd15 --size 128 --steps 2 --clips 0 --runs 2

Rows, each in a process of its own (so each one's peak memory is its own):
- `diffusers`: AnimateDiffControlNetPipeline running the stage's own parts: its UNet with the
  motion modules, its ControlNet on the reference, its appearance tokens through diffusers'
  IP-Adapter path (`ip_adapter_image_embeds`), the motion modules' caption, the same starting
  latents (`latents=`, the noise prior) and the same DPM-Solver++ schedule, steps and guidance:
  step for step the computation ours does, so its readings are the reference;
- `ours`: the stage at its defaults;
- `ours, cache N`: the stage with `cache_interval` N (diffusion/cache.py: deep features reused);
- `student, N steps`: a few-step student of the stage (`magicvideo train distill-i2v`, a LoRA
  folder over it, `--student`), sampled by LCM in N steps without guidance;
- `diffusers in D`, `ours in D` (`--also-dtype D`): those two rows with weights and activations in
  dtype D, judged against diffusers' row in `--dtype`, so what D costs in readings is paired.
With `--no-controlnet`, diffusers' row is AnimateDiffPipeline and ours run without the ControlNet.
Seconds: one clip (batch 1) at the stage's defaults, the whole call (prompt encoding, sampling,
decoding; loading excluded), median of `--runs` after one warm-up. Memory: the process's peak
resident memory (weights included), or peak allocated on a GPU. Readings: the judge on `--clips`
held-out clips (`--split validation`: seed 777, where settings are chosen; `test`: seed 4242, where
they are reported), the true first frame as the reference, seed 0, one clip per call; each of our
rows beside diffusers' with a 95% paired bootstrap interval over clips. Run it from the repository root.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

SPLITS = {"validation": 777, "test": 4242}
SHARES = ("motion", "shape", "colour", "all")  # the judge's clip-level readings (objects; clips for `all`)
FRAME_SHARES = ("frame_shape", "frame_colour")


def split_row(row: str, dtype: str) -> tuple[str, str]:
    """A row's name without its dtype, and its dtype: `ours in bf16` is `ours` in bf16; a row without
    ` in ...` runs in the run's `--dtype`."""
    name, _, own = row.partition(" in ")
    return name, own or dtype


def load_stage(args: argparse.Namespace, row: str = "ours"):
    from magicvideo.device import Placement
    from magicvideo.presets import load_i2v

    row, dtype = split_row(row, args.dtype)
    student = row.startswith("student")
    stage = load_i2v(args.preset, args.student if student else args.weights,
                     Placement(device=args.device, dtype=dtype))
    steps = int(row.split()[1]) if student else args.steps
    changes = {k: v for k, v in {"size": args.size, "steps": steps, "frames": args.frames}.items() if v}
    stage.settings = stage.settings.merged(**changes)
    return stage


def diffusers_call(stage, controlnet: bool = True):
    """A function (prompt, reference (3, H, W)) -> frames (1, 3, F, H, W) that runs the stage's parts
    through diffusers' AnimateDiffControlNetPipeline (or AnimateDiffPipeline, without the ControlNet)."""
    from diffusers import AnimateDiffControlNetPipeline, AnimateDiffPipeline
    from diffusers.models.embeddings import MultiIPAdapterImageProjection

    from magicvideo.diffusion.schedule import sampler
    from magicvideo.models.appearance import set_appearance_scale
    from magicvideo.models.motion_text import motion_text, motion_text_processors, set_motion_text_scale
    from magicvideo.settings import frame_size
    from magicvideo.text import unet_text_inputs

    unet, s = stage.unet, stage.settings
    if unet_text_inputs(unet, torch.zeros(1, 1, stage.text_encoder.dim), 1):
        raise SystemExit("this stage's UNet reads a pooled sentence vector, which diffusers' pipeline cannot pass")
    if controlnet and stage.controlnet is None:
        raise SystemExit("this stage has no ControlNet: give --no-controlnet (AnimateDiffPipeline)")
    if stage.appearance is not None:  # the tokens go in as they are: diffusers' IP-Adapter path, no projection
        unet.encoder_hid_proj = MultiIPAdapterImageProjection([torch.nn.Identity()])
        unet.register_to_config(encoder_hid_dim_type="ip_image_proj")
    parts = dict(vae=stage.vae, text_encoder=None, tokenizer=None, unet=unet, motion_adapter=None,
                 scheduler=sampler(stage.scheduler_config))
    pipe = (AnimateDiffControlNetPipeline(**parts, controlnet=stage.controlnet) if controlnet
            else AnimateDiffPipeline(**parts))
    pipe.set_progress_bar_config(disable=True)
    height, width = frame_size(s)
    dtype = unet.dtype

    def call(prompt: str, reference: torch.Tensor) -> torch.Tensor:
        image = reference[None].float()
        cond = stage.encode_prompt([prompt]).hidden.to(stage.device, dtype)
        negative = stage.text_encoder.empty(1).hidden.to(stage.device, dtype)
        control, ref_latent = stage.encode_reference(image, (height, width))
        latents = stage.start(ref_latent, 0, s, stage.context(s.context_length, s.context_stride, s.frames))
        extra = {"conditioning_frames": [control[0]] * s.frames,
                 "controlnet_conditioning_scale": s.controlnet_scale} if controlnet else {}
        if stage.appearance is not None:
            set_appearance_scale(unet, s.appearance_scale)
            tokens = stage.appearance(image.to(stage.device, next(stage.appearance.parameters()).dtype))
            unguided = stage.appearance.unconditional(1) if hasattr(stage.appearance, "unconditional") else tokens
            extra["ip_adapter_image_embeds"] = [torch.cat([unguided, tokens]).unsqueeze(1).to(dtype)]
        if motion_text_processors(unet):
            set_motion_text_scale(unet, s.motion_text_scale)
        with motion_text(unet, torch.cat([negative, cond])):  # the pipeline's batch: [negative, prompt]
            out = pipe(prompt_embeds=cond, negative_prompt_embeds=negative, num_frames=s.frames, height=height,
                       width=width, num_inference_steps=s.steps, guidance_scale=s.guidance,
                       latents=latents.to(stage.device, dtype),
                       output_type="pt", decode_chunk_size=stage.placement.vae_chunk, **extra)
        return out.frames.float().cpu().permute(0, 2, 1, 3, 4)

    return call


def measure(args: argparse.Namespace) -> dict:
    """One row, in this process: seconds per clip, peak memory, and the judge's per-clip readings."""
    from magicvideo.judge.i2v import evaluate_i2v
    from magicvideo.world import draw_clip, render_frames

    stage = load_stage(args, args.child)
    name, _ = split_row(args.child, args.dtype)
    if name == "diffusers":
        call = diffusers_call(stage, controlnet=not args.no_controlnet)
    else:
        cache = int(name.split()[-1]) if name.startswith("ours, cache") else None

        def call(prompt: str, reference: torch.Tensor) -> torch.Tensor:
            return stage(prompt, reference, seed=0, cache_interval=cache, use_controlnet=not args.no_controlnet).frames
    clip = draw_clip(SPLITS[args.split], "heldout", 0)
    reference = render_frames(clip.scene, 128, [0.0])[:, 0]
    cuda = stage.device.type == "cuda"
    seconds = []
    for i in range(1 + args.runs):
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        began = time.perf_counter()
        with torch.no_grad():
            call(clip.caption, reference)
        if cuda:
            torch.cuda.synchronize()
        if i:  # the first is the warm-up
            seconds.append(time.perf_counter() - began)
    row = {"row": args.child, "seconds": statistics.median(seconds), "runs": seconds}
    if args.clips:
        def generate(chunk, refs):
            with torch.no_grad():
                return torch.cat([call(c.caption, r) for c, r in zip(chunk, refs)])
        report = evaluate_i2v(None, args.clips, SPLITS[args.split], size=stage.settings.size, generate=generate,
                              frames=stage.settings.frames, progress=False)
        row["readings"] = {**{k: report["accuracy"][k] for k in SHARES},
                           **{k: report[k] for k in FRAME_SHARES},
                           "first_frame_psnr": report["first_frame_psnr"], "flicker_ratio": report["flicker_ratio"]}
        row["per_clip"] = report["per_clip"]
        row["truth_flicker"] = report["ground_truth_flicker"]
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    row["peak_gib"] = peak / 2**30
    return row


def against(ours: list[dict], theirs: list[dict], truth_flicker: float) -> dict:
    """Ours minus diffusers' on the same clips: each reading's difference and its 95% paired
    bootstrap interval ([difference, low, high])."""
    from report import interval

    def per_clip(key: str, rows: list[dict]) -> np.ndarray:
        return np.array([r[key] if r[key] is not None else 0 for r in rows], float)

    out = {}
    for key, count in [("motion", "objects_expected"), ("shape", "objects_expected"), ("colour", "objects_expected"),
                       ("frame_shape", "frame_objects"), ("frame_colour", "frame_objects")]:
        objects = per_clip(count, ours).mean()  # the same clips in both rows: one denominator
        diffs = (per_clip(key, ours) - per_clip(key, theirs)) / objects
        out[key] = [float(diffs.mean()), *interval(diffs)]
    diffs = per_clip("all", ours) - per_clip("all", theirs)
    out["all"] = [float(diffs.mean()), *interval(diffs)]
    diffs = per_clip("first_frame_psnr", ours) - per_clip("first_frame_psnr", theirs)
    out["first_frame_psnr"] = [float(diffs.mean()), *interval(diffs)]
    diffs = (per_clip("flicker", ours) - per_clip("flicker", theirs)) / truth_flicker
    out["flicker_ratio"] = [float(diffs.mean()), *interval(diffs)]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=("tiny", "sd15"), default="tiny")
    parser.add_argument("--weights", help="a stage folder (tiny: default the shipped one) or an sd15-layout folder")
    parser.add_argument("--size", type=int, help="keyframe side (default: the stage's)")
    parser.add_argument("--frames", type=int, help="keyframes (default: the stage's)")
    parser.add_argument("--steps", type=int, help="sampler steps (default: the stage's)")
    parser.add_argument("--cache", type=int, nargs="*", default=[2], help="cache intervals for `ours, cache N` rows")
    parser.add_argument("--student", help="a few-step student folder of the stage (`magicvideo train distill-i2v`)")
    parser.add_argument("--student-steps", type=int, nargs="*", default=[4], help="LCM steps for `student` rows")
    parser.add_argument("--no-controlnet", action="store_true",
                        help="without the ControlNet: diffusers' AnimateDiffPipeline, ours with use_controlnet=False")
    parser.add_argument("--clips", type=int, default=100, help="held-out clips the judge reads per row (0: speed only)")
    parser.add_argument("--split", choices=tuple(SPLITS), default="validation")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="fp16 | bf16 | fp32 (default: fp16 on a GPU, fp32 on the CPU)")
    parser.add_argument("--also-dtype", help="fp16 | bf16 | fp32: `diffusers in D` and `ours in D` rows as well, "
                        "judged against diffusers' row in --dtype")
    parser.add_argument("--out", help="markdown table (default: benchmarks/results/vs_diffusers_PRESET.md)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.dtype = args.dtype or ("fp16" if args.device.startswith("cuda") else "fp32")
    if args.preset == "sd15" and not args.weights:
        parser.error("--preset sd15 needs --weights (a folder in the sd15 layout: magicvideo random-weights DIR)")
    if args.child:
        print(json.dumps(measure(args)))
        return
    from magicvideo.training.common import machine
    from report import publish

    rows = ["diffusers", "ours", *[f"ours, cache {n}" for n in args.cache],
            *[f"student, {n} steps" for n in (args.student_steps if args.student else [])],
            *([f"diffusers in {args.also_dtype}", f"ours in {args.also_dtype}"] if args.also_dtype else [])]
    results = {}
    for row in rows:
        child = [sys.executable, __file__, *sys.argv[1:], "--child", row]
        done = subprocess.run(child, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"{row} failed:\n{done.stderr[-3000:]}")
        results[row] = json.loads(done.stdout.strip().splitlines()[-1])
    base = results["diffusers"]
    device = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else machine()
    pipeline = "AnimateDiffPipeline" if args.no_controlnet else "AnimateDiffControlNetPipeline"
    lines = [f"# Stage 2 against diffusers' {pipeline} ({args.preset})", "",
             f"`python benchmarks/vs_diffusers.py {' '.join(sys.argv[1:])}` on {device} ({args.device}, {args.dtype}).",
             (f"Readings: {args.clips} held-out clips ({args.split}); [..]: 95% paired bootstrap interval of ours "
              "minus diffusers' over clips." if args.clips else
              f"Speed only: one {args.split} clip, median of {args.runs} after a warm-up, rows one after another."), "",
             "| row | seconds per clip | vs diffusers | peak GiB | motion | shape | colour | all | frames: shape | "
             "first-frame PSNR | flicker ratio |", "|---" * 11 + "|"]
    for row, r in results.items():
        r.update(preset=args.preset, dtype=split_row(row, args.dtype)[1], device=args.device)
        r["speedup"] = base["seconds"] / r["seconds"]
        cells = [f"{r['seconds']:.2f}", f"{r['speedup']:.2f}x", f"{r['peak_gib']:.2f}"]
        if "readings" in r:
            gap = against(r["per_clip"], base["per_clip"], base["truth_flicker"]) if row != "diffusers" else None
            r["vs_diffusers"] = gap
            for key in (*SHARES, "frame_shape", "first_frame_psnr", "flicker_ratio"):
                value = f"{r['readings'][key]:.3f}" if r["readings"][key] is not None else "-"
                cells.append(value + (f" [{gap[key][1]:+.3f}, {gap[key][2]:+.3f}]" if gap else ""))
        else:
            cells += ["-"] * 7
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
        print(json.dumps({k: v for k, v in r.items() if k != "per_clip"}))
    publish(args.out or f"benchmarks/results/vs_diffusers_{args.preset}.md", lines)


if __name__ == "__main__":
    main()
