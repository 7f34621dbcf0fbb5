"""Full-size image-to-video: our stage 2 against diffusers' own AnimateDiffControlNetPipeline
on the same weights, steps, size and frames, in one run.

    magicvideo random-weights /tmp/sd15             # or any folder in the sd15 layout
    python benchmarks/sd15_i2v.py --weights /tmp/sd15                        # GPU: 512x512, 16 frames, 25 steps
    python benchmarks/sd15_i2v.py --weights /tmp/sd15 --size 128 --steps 1 --runs 2 --warmup 0 --dtype bf16 \\
        --device cpu                                                         # what a CPU can afford

Rows, each in a process of its own (so each one's peak memory is its own):
- `diffusers`: AnimateDiffControlNetPipeline (the folder's UNet + i2v motion adapter + ControlNet,
  DPM-Solver++ on the folder's schedule, the reference as every frame's conditioning image);
- `ours, like for like`: our ImageToVideo with the same parts only (the folder seen without its
  image encoder and image branch);
- `ours, full`: our stage as shipped: plus the CLIP appearance encoder and its cross-attention.
Both run classifier-free guidance (two UNet passes per step) and decode `--vae-chunk` frames at a time.
Time: the whole call (prompt encoding, sampling, decoding), median of `--runs` after `--warmup`.
Memory: peak allocated on the GPU (torch.cuda.max_memory_allocated), or the process's peak resident
memory on the CPU (weights included). Run it from the repository root.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROWS = ("diffusers", "ours, like for like", "ours, full")


def measure(args: argparse.Namespace) -> dict:
    """One row, in this process."""
    from magicvideo.device import Placement
    from magicvideo.presets import load_i2v

    placement = Placement(device=args.device, dtype=args.dtype, vae_chunk=args.vae_chunk)
    torch.manual_seed(0)
    reference = torch.rand(3, args.size, args.size)
    prompt = "a red ball rolling across a wooden table"
    began = time.perf_counter()
    if args.child == "diffusers":
        pipe = _diffusers_pipeline(args.weights, placement)
        conditioning = [reference.permute(1, 2, 0).numpy()] * args.frames

        def run() -> None:
            pipe(prompt, num_frames=args.frames, height=args.size, width=args.size, num_inference_steps=args.steps,
                 guidance_scale=args.guidance, conditioning_frames=conditioning, output_type="pt",
                 decode_chunk_size=args.vae_chunk, generator=torch.Generator().manual_seed(0))
    else:
        weights = _without_appearance(args.weights) if args.child == "ours, like for like" else args.weights
        stage = load_i2v("sd15", weights, placement)

        def run() -> None:
            stage(prompt, reference, seed=0, frames=args.frames, steps=args.steps, guidance=args.guidance,
                  size=args.size)
    load = time.perf_counter() - began
    cuda = placement.device.startswith("cuda")
    seconds = []
    for i in range(args.warmup + args.runs):
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        began = time.perf_counter()
        with torch.no_grad():
            run()
        if cuda:
            torch.cuda.synchronize()
        if i >= args.warmup:
            seconds.append(time.perf_counter() - began)
    peak = (torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"row": args.child, "load_s": load, "seconds": seconds, "peak_gib": peak / 2**30}


def _without_appearance(weights: str) -> str:
    """The folder seen without its image branch (links to everything else), so the like-for-like
    row never loads the image encoder."""
    root = Path(tempfile.mkdtemp())
    (root / "i2v").mkdir()
    (root / "t2i").symlink_to(Path(weights).resolve() / "t2i")
    for part in (Path(weights) / "i2v").iterdir():
        if part.name not in ("appearance", "image_encoder"):
            (root / "i2v" / part.name).symlink_to(part.resolve())
    return str(root)


def _diffusers_pipeline(weights: str, placement):
    """diffusers' AnimateDiffControlNetPipeline from the folder's parts, loaded by diffusers and
    transformers themselves, sampling with DPM-Solver++ on the folder's schedule as ours does."""
    from diffusers import (
        AnimateDiffControlNetPipeline,
        AutoencoderKL,
        ControlNetModel,
        MotionAdapter,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel, CLIPTokenizer

    from magicvideo.presets.sd15 import i2v_parts
    from magicvideo.stages.t2i import sampler

    parts, dtype = i2v_parts(weights), {"torch_dtype": placement.torch_dtype}
    schedule = json.loads((parts["scheduler"] / "scheduler_config.json").read_text())
    pipe = AnimateDiffControlNetPipeline(
        vae=AutoencoderKL.from_pretrained(parts["vae"], **dtype),
        text_encoder=CLIPTextModel.from_pretrained(parts["text_encoder"], dtype=placement.torch_dtype),
        tokenizer=CLIPTokenizer.from_pretrained(parts["tokenizer"]),
        unet=UNet2DConditionModel.from_pretrained(parts["unet"], **dtype),
        motion_adapter=MotionAdapter.from_pretrained(Path(weights) / "i2v" / "motion_adapter", **dtype),
        controlnet=ControlNetModel.from_pretrained(Path(weights) / "i2v" / "controlnet", **dtype),
        scheduler=sampler(schedule))
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(placement.device, placement.torch_dtype)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, help="a folder in the sd15 layout (magicvideo random-weights)")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="fp16 | bf16 | fp32 (default: fp16 on a GPU, fp32 on the CPU)")
    parser.add_argument("--vae-chunk", type=int, default=16)
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    parser.add_argument("--out", default="benchmarks/results/sd15_i2v.md")
    parser.add_argument("--child", choices=ROWS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.dtype = args.dtype or ("fp16" if args.device.startswith("cuda") else "fp32")
    if args.child:
        print(json.dumps(measure(args)))
        return
    from magicvideo.training.common import machine
    from report import publish

    results = {}
    for row in args.rows:
        child = [sys.executable, __file__, *sys.argv[1:], "--child", row]
        done = subprocess.run(child, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"{row} failed:\n{done.stderr[-3000:]}")
        results[row] = json.loads(done.stdout.strip().splitlines()[-1])
        print(row, results[row], file=sys.stderr)
    device = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else machine()
    base = statistics.median(results["diffusers"]["seconds"]) if "diffusers" in results else None
    lines = ["# Full-size image-to-video: ours against diffusers' AnimateDiffControlNetPipeline", "",
             f"`python benchmarks/sd15_i2v.py {' '.join(sys.argv[1:])}` on {device} ({args.device}, {args.dtype}). "
             f"{args.frames} frames at {args.size}x{args.size}, {args.steps} DPM-Solver++ steps, guidance "
             f"{args.guidance:g}, VAE {args.vae_chunk} frames per call; weights: {args.weights}.", "",
             "| | seconds per clip (median) | runs | vs diffusers | peak memory GiB | load s |",
             "|---|---|---|---|---|---|"]
    for row, r in results.items():
        median = statistics.median(r["seconds"])
        ratio = f"{median / base:.2f}x" if base else "-"
        lines.append(f"| {row} | {median:.2f} | {len(r['seconds'])} | {ratio} | {r['peak_gib']:.2f} | "
                     f"{r['load_s']:.1f} |")
    cuda = args.device.startswith("cuda")
    memory = "GPU peak allocated" if cuda else "process peak resident memory, weights and loading included"
    lines += ["", f"Memory: {memory}. Every row in a process of its own."]
    publish(args.out, lines)


if __name__ == "__main__":
    main()
