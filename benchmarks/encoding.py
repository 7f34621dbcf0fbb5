"""What writing a clip to mp4 costs in PSNR, per flavour and size (decoded vs the exact frames).

    python benchmarks/encoding.py
writes benchmarks/results/encoding.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from magicvideo.media import FLAVOURS, read_video, to_uint8, write_video
from magicvideo.world import draw_clip, render_clip
from report import publish


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / ((a - b) ** 2).mean()))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=20)
    ap.add_argument("--out", default="benchmarks/results/encoding.md")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "v.mp4"
        for size in (64, 128):
            clips = [render_clip(draw_clip(1, "heldout", i).scene, size, 24, 46) for i in range(args.clips)]
            for flavour, settings in FLAVOURS.items():
                scores, sizes = [], []
                for clip in clips:
                    exact8 = torch.from_numpy(to_uint8(clip)).permute(3, 0, 1, 2).float() / 255
                    write_video(path, clip, 24, flavour)
                    scores.append(psnr(read_video(path)[0], exact8))
                    sizes.append(path.stat().st_size / 1000)
                rows.append(f"| {size}x{size} | {flavour} ({settings['pix_fmt']}, CRF {settings['crf']}) | "
                            f"{statistics.mean(scores):.1f} | {min(scores):.1f} | {statistics.mean(sizes):.0f} |")
    publish(args.out, [
        "# mp4 encoding cost", "",
        f"PSNR (dB) of decoded frames against the 8-bit frames written, {args.clips} held-out clips of "
        "46 frames at 24 fps. Command: `python benchmarks/encoding.py`.", "",
        "| size | flavour | mean PSNR | worst clip | kB per clip |", "|---|---|---|---|---|", *rows, ""])


if __name__ == "__main__":
    main()
