"""`magicvideo synth`: write world clips to a folder as mp4 files plus metadata.jsonl."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tqdm import tqdm

from magicvideo.media import atomic_path, write_video
from magicvideo.world.datasets import draw_clip
from magicvideo.world.render import render_clip

METADATA = "metadata.jsonl"


def write_world(
    out: str | os.PathLike,
    count: int,
    split: str = "train",
    seed: int = 0,
    size: int = 128,
    fps: float = 24,
    frames: int = 46,
    flavour: str = "measure",
    progress: bool = True,
) -> Path:
    """Render clips 0..count-1 of (seed, split) into `out`; returns the metadata path.

    The scenes depend only on (seed, split, index): size, fps and frames change how a
    clip is rendered, never what is in it. metadata.jsonl is written last, atomically,
    so a folder that has one is complete.
    """
    if count < 1:
        raise ValueError(f"count must be positive, got {count}")
    if frames < 1 or fps <= 0:
        raise ValueError(f"frames and fps must be positive, got frames={frames}, fps={fps}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for index in tqdm(range(count), desc=f"synth {split}", unit="clip", disable=not progress):
        clip = draw_clip(seed, split, index)
        name = f"clip_{index:05d}.mp4"
        write_video(out / name, render_clip(clip.scene, size, fps, frames), fps, flavour)
        record = {"file": name, "caption": clip.caption, "split": split, "seed": seed, "index": index,
                  "size": size, "fps": fps, "frames": frames}
        lines.append(json.dumps(record | clip.scene.to_dict()))
    with atomic_path(out / METADATA) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out / METADATA
