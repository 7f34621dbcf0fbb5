"""`magicvideo interpolate` on long, large footage: peak resident memory and frames per second.

    python benchmarks/vfi_memory.py [--cases 1080p:2:2 1080p:20:2 360p:2:4 360p:20:4] [--models blend ifnet edsc]

Each case is SIZE:SECONDS:TIMES. The input is a 24 fps clip with a sine tone, a moving test
pattern made by the ffmpeg that imageio-ffmpeg ships (the same pattern at every length, so only
the length changes). Each run is its own process, so its peak resident memory (the kernel's
ru_maxrss of the child) is its own, in GiB (2^30 bytes). The bar: 2 s of 1080p x2 under 2 GB
(1.86 GiB), and 20 s the same.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import imageio_ffmpeg

from magicvideo.training.common import machine
from report import publish

SIZES = {"1080p": (1920, 1080), "720p": (1280, 720), "360p": (640, 360)}


def make_clip(path: Path, size: str, seconds: float) -> None:
    w, h = SIZES[size]
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc2=size={w}x{h}:rate=24", "-f", "lavfi", "-i", "sine=frequency=440", "-t", str(seconds),
                    "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac", str(path)],
                   check=True)


def run_case(clip: Path, out: Path, model: str, times: int) -> tuple[float, float]:
    """(peak resident GiB of the interpolate process, wall seconds)."""
    began = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "magicvideo.cli", "interpolate", str(clip), "-o", str(out),
                              "--model", model, "--times", str(times), "--quiet"])
    _, status, usage = os.wait4(child.pid, 0)
    if status:
        raise SystemExit(f"interpolate failed on {clip} with {model}")
    return usage.ru_maxrss / 2**20, time.perf_counter() - began  # ru_maxrss is in kB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=["1080p:2:2", "1080p:20:2", "360p:2:4", "360p:20:4"])
    parser.add_argument("--models", nargs="+", default=["blend", "ifnet", "edsc"])
    parser.add_argument("--out", default="benchmarks/results/vfi_memory.md")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases:
            size, seconds, times = case.split(":")
            clip = Path(tmp) / f"{size}_{seconds}s.mp4"
            if not clip.exists():
                make_clip(clip, size, float(seconds))
            for model in args.models:
                peak, wall = run_case(clip, Path(tmp) / "out.mp4", model, int(times))
                frames = (round(float(seconds) * 24) - 1) * int(times) + 1
                rows.append(f"| {size} | {seconds} s | x{times} | {model} | {peak:.2f} | {frames / wall:.2f} |")
                print(rows[-1], flush=True)
    publish(args.out, [
        "# Frame interpolation on long, large footage", "",
        f"`python benchmarks/vfi_memory.py --cases {' '.join(args.cases)} --models {' '.join(args.models)}` on "
        f"{machine()}, {resource.getpagesize()}-byte pages. A 24 fps test-pattern clip with sound; output mp4 "
        "(web flavour) with the sound kept. Peak resident memory of the whole process (Python, torch and the "
        "models included); frames per second of output, wall time (model loading and encoding included).", "",
        "| input | length | factor | model | peak resident GiB | output frames per second |",
        "|---|---|---|---|---|---|", *rows,
    ])


if __name__ == "__main__":
    main()
