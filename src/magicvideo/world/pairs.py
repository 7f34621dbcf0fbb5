"""`magicvideo synth-pairs`: preference pairs the world can make without a model or a rater.

Each pair is one train still as its caption describes it (chosen) and the same still with one
attribute of one object changed (rejected): same background, positions, sizes and the other
attributes, so the two images differ only where the caption is contradicted. Why: the plain
denoising loss barely tells a star from a circle of the same colour (only the outline differs,
a few latent cells), while Diffusion-DPO on such a pair is driven by that difference alone. The
pairs file is the one `magicvideo train preference --pairs` reads.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from magicvideo.media import atomic_path, write_image
from magicvideo.world import vocab
from magicvideo.world.datasets import draw_clip
from magicvideo.world.render import render_frames
from magicvideo.world.scene import Scene

CHANGES = ("shape", "colour")
PAIRS = "pairs.jsonl"


def counterfactual(scene: Scene, rng: np.random.Generator, change: str) -> Scene:
    """`scene` with the `change` attribute of one of its objects (drawn by rng) set to another value."""
    if change not in CHANGES:
        raise ValueError(f"unknown change {change!r}; expected one of {CHANGES}")
    k = int(rng.integers(len(scene.objects)))
    obj = scene.objects[k]
    values = vocab.SHAPES if change == "shape" else tuple(vocab.COLOURS)
    other = [v for v in values if v != getattr(obj, change)]
    changed = dataclasses.replace(obj, **{change: other[int(rng.integers(len(other)))]})
    return dataclasses.replace(scene, objects=scene.objects[:k] + (changed,) + scene.objects[k + 1:])


def write_pairs(out: str | os.PathLike, count: int, change: str = "shape", split: str = "train", seed: int = 0,
                size: int = 128, progress: bool = True) -> Path:
    """Pairs for stills 0..count-1 of (seed, split) into `out`: `NNNNNN_chosen.png`,
    `NNNNNN_rejected.png` and `pairs.jsonl` (written last, atomically, so a folder that has one is
    complete; images already written are kept, so a rerun after a kill goes on). Returns its path."""
    if count < 1:
        raise ValueError(f"count must be positive, got {count}")
    if change not in CHANGES:
        raise ValueError(f"unknown change {change!r}; expected one of {CHANGES}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in tqdm(range(count), desc="synth pairs", disable=not progress):
        clip = draw_clip(seed, split, i)
        names = (f"{i:06d}_chosen.png", f"{i:06d}_rejected.png")
        if not all((out / n).is_file() for n in names):
            # The change is drawn from its own generator so it never moves the scene or caption.
            other = counterfactual(clip.scene, np.random.default_rng([seed, i, CHANGES.index(change)]), change)
            for name, scene in zip(names, (clip.scene, other)):
                write_image(out / name, render_frames(scene, size, [0.0])[:, 0])  # atomic
        lines.append(json.dumps({"prompt": clip.caption, "chosen": names[0], "rejected": names[1]}))
    with atomic_path(out / PAIRS) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return out / PAIRS
