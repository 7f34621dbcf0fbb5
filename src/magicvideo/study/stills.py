"""`magicvideo study stills`: a study of stage 1's own images, for preference tuning with no
people. The stage draws each of the first `prompts` train prompts at several seeds; every seed
is a system, so every two images of one prompt are a pair. `magicvideo study auto` then votes on
them with the judge (or people do, with `study serve`), and `magicvideo train preference --study`
learns from the votes.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from tqdm import tqdm

from magicvideo.media import write_image
from magicvideo.study.build import media_dir, new_study
from magicvideo.study.db import StudyError


def stills_dir(db_path: str | Path) -> Path:
    """Where a stills study keeps the images it drew: STUDY.db -> STUDY.stills/seed_K/PROMPT.png."""
    db_path = Path(db_path)
    return db_path.with_name(db_path.stem + ".stills")


def make_still_study(db_path: str | Path, weights: str | os.PathLike | None = None, prompts: int = 400,
                     seeds: int = 4, world_seed: int = 0, batch: int = 25,
                     progress: bool = True) -> sqlite3.Connection:
    """Draw the images and build the study (every two seeds of every prompt); returns it open.
    A rerun after a kill keeps the images already drawn."""
    from magicvideo.presets import load_t2i
    from magicvideo.world import draw_clip

    db_path = Path(db_path)
    if prompts < 1 or seeds < 2:
        raise StudyError(f"a stills study needs at least 1 prompt and 2 seeds, got {prompts} and {seeds}")
    if db_path.exists() or media_dir(db_path).exists():
        raise StudyError(f"{db_path} (or {media_dir(db_path)}) exists already; a new study needs a new file")
    captions = list(dict.fromkeys(" ".join(draw_clip(world_seed, "train", i).caption.split())
                                  for i in range(prompts)))  # (a repeated caption is one prompt)
    stage = load_t2i("tiny", weights)
    folders = [stills_dir(db_path) / f"seed_{k}" for k in range(seeds)]
    jobs = [(k, start) for k in range(seeds) for start in range(0, len(captions), batch)]
    for k, start in tqdm(jobs, desc="stage 1 on train prompts", disable=not progress):
        chunk = captions[start : start + batch]
        paths = [folders[k] / f"{c}.png" for c in chunk]
        if all(p.is_file() for p in paths):
            continue
        # seed k of prompt i: its own noise, and the same image whatever the batch
        images = stage(chunk, seed=[k * 1_000_003 + start + i for i in range(len(chunk))]).images
        folders[k].mkdir(parents=True, exist_ok=True)
        for image, path in zip(images, paths, strict=True):
            write_image(path, image)  # (atomically: a kill leaves no half image to be taken as drawn)
    return new_study(db_path, [f"seed {k}={folder}" for k, folder in enumerate(folders)], progress=progress)
