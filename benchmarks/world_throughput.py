"""How fast the world renders, and how fast its datasets feed a trainer.

    python benchmarks/world_throughput.py
writes benchmarks/results/world_throughput.md. Median of 5 runs each.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.data import DataLoader

from magicvideo.world import WorldClips, WorldImages, draw_clip, render_clip
from report import publish


def _median_rate(fn, items: int, runs: int = 5) -> float:
    rates = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        rates.append(items / (time.perf_counter() - start))
    return statistics.median(rates)


def _drain(loader: DataLoader, batches: int) -> None:
    for i, _ in enumerate(loader):
        if i + 1 == batches:
            break


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results/world_throughput.md")
    args = ap.parse_args()
    torch.set_num_threads(1)
    scenes = [draw_clip(0, "train", i).scene for i in range(16)]
    rows = []
    for size in (64, 128):
        rate = _median_rate(lambda s=size: [render_clip(sc, s, 24, 4) for sc in scenes], 16 * 4)
        rows.append(f"| render frames, {size}x{size} | 1 | {rate:.0f} frames/s |")
    full = WorldClips("train", length=10_000)  # reference + 16x64 + 16x128 + 46x128
    i2v = WorldClips("train", length=10_000, parts=("reference", "keyframes"))
    images = WorldImages("train", length=10_000)
    for name, ds in (("WorldClips, all parts", full), ("WorldClips, reference + keyframes (I2V)", i2v),
                     ("WorldImages 128x128 (T2I)", images)):
        rate = _median_rate(lambda d=ds: [d[i] for i in range(8)], 8)
        rows.append(f"| {name} | 1 | {rate:.1f} items/s |")
        loader = DataLoader(ds, batch_size=8, num_workers=2, persistent_workers=True, prefetch_factor=2)
        _drain(loader, 2)  # start the workers
        rate = _median_rate(lambda ld=loader: _drain(ld, 4), 32)
        rows.append(f"| {name}, DataLoader batch 8 | 2 workers | {rate:.1f} items/s |")
    publish(args.out, [
"# World throughput", "",
                      "Command: `python benchmarks/world_throughput.py` (median of 5 runs; one torch thread "
                      "per process).", "",
                      "| what | processes | rate |", "|---|---|---|", *rows, ""])


if __name__ == "__main__":
    main()
