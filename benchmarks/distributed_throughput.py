"""Training throughput under one process and under several: the stage-1 recipe of
configs/train/t2i_tiny_wide.yaml (128x128 images, batch 32, bf16) for a few steps, the loop's own
clock (the checkpoint's `elapsed`: training only, no start-up or caches), the median of repeats.

    python benchmarks/distributed_throughput.py [--processes 1 2] [--steps 15] [--repeats 3]

N processes share the machine's cores (OMP_NUM_THREADS = cores / N each) and train on slices of
the same global batch, so images per second is the figure to compare.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

import yaml

from magicvideo.training.common import load_checkpoint, load_config, machine
from magicvideo.training.t2i import LATENTS, OBJECTS, PROMPTS, T2ITrainConfig
from report import publish

ROOT = Path(__file__).resolve().parents[1]


def train(config: Path, out: Path, processes: int) -> float:
    """The loop's seconds for the config's steps, under `processes` processes."""
    cores = os.cpu_count() or 1
    env = {**os.environ, "OMP_NUM_THREADS": str(max(cores // processes, 1))}
    command = [sys.executable, "-m", "magicvideo.cli"]
    if processes > 1:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        command = [sys.executable, "-m", "accelerate.commands.launch", "--quiet", "--config_file",
                   str(ROOT / "configs/accelerate/cpu_2_processes.yaml"), "--num_processes", str(processes),
                   "--main_process_port", str(port), "-m", "magicvideo.cli"]
    subprocess.run([*command, "train", "t2i", "--config", str(config), "--out", str(out), "--quiet"], check=True,
                   env=env, capture_output=True)
    return load_checkpoint(out / "state")["elapsed"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/distributed_throughput.md")
    args = parser.parse_args()
    base = load_config(T2ITrainConfig, ROOT / "configs/train/t2i_tiny_wide.yaml")
    config = replace(base, samples=256, steps=args.steps, max_minutes=0, eval_prompts=0, snapshot_every=0,
                     checkpoint_every=args.steps, warmup=1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = tmp / "config.yaml"
        path.write_text(yaml.safe_dump(asdict(config)))
        caches = tmp / "caches"
        for n in args.processes:
            seconds = []
            for r in range(args.repeats):
                out = tmp / f"p{n}_{r}"
                if caches.is_dir():  # the caches are made once: only the loop is timed anyway
                    shutil.copytree(caches, out)
                seconds.append(train(path, out, n))
                if not caches.is_dir():
                    caches.mkdir()
                    for name in (PROMPTS, LATENTS, OBJECTS):
                        shutil.copy(out / name, caches / name)
            median = statistics.median(seconds)
            rows.append((n, median, args.steps * config.batch_size / median, seconds))
            print(f"{n} process(es): {median:.1f} s for {args.steps} steps ({rows[-1][2]:.1f} images/s)", flush=True)
    one = rows[0][2]
    lines = [
        "# Training throughput: one process and several", "",
        f"Command: `python benchmarks/distributed_throughput.py --processes {' '.join(map(str, args.processes))} "
        f"--steps {args.steps} --repeats {args.repeats}` on {machine()}, {os.cpu_count()} cores. Stage 1's "
        f"recipe of `configs/train/t2i_tiny_wide.yaml` (128x128, batch {config.batch_size} in all, bf16), "
        f"{args.steps} steps, the loop's own clock; each process gets cores / N threads.", "",
        "| processes | seconds (median) | images per second | against one process | runs (s) |",
        "|---|---|---|---|---|",
    ]
    for n, median, rate, seconds in rows:
        lines.append(f"| {n} | {median:.1f} | {rate:.1f} | {rate / one:.2f}x | "
                     f"{', '.join(f'{s:.1f}' for s in seconds)} |")
    publish(args.out, lines)


if __name__ == "__main__":
    main()
