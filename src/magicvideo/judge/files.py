"""Judge what is on disk: a `synth` folder against its metadata, or any frames against a prompt."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tqdm import tqdm

from magicvideo.judge.judge import ClipReading, Expected, aggregate, read_clip, score_clip
from magicvideo.judge.prompt import parse_prompt
from magicvideo.media import MediaError, load_frames
from magicvideo.world.scene import Scene
from magicvideo.world.write import METADATA


def expected_from_scene(scene: Scene) -> Expected:
    return Expected([(o.shape, o.colour, o.motion) for o in scene.objects], scene.background)


def _report(entries: list[dict], readings: list[ClipReading]) -> dict:
    scored = [e["score"] for e in entries if e["score"] is not None]
    report = aggregate(scored, readings)
    if not scored:  # frames read without a prompt: nothing to be right or wrong about
        report["accuracy"] = None
    report["clips"] = len(entries)
    report["per_clip"] = entries
    return report


def judge_world_folder(folder: str | os.PathLike, progress: bool = True) -> dict:
    """Score every clip of a folder written by `magicvideo synth` against its metadata."""
    folder = Path(folder)
    lines = (folder / METADATA).read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    if not records:
        raise MediaError(f"{folder / METADATA} lists no clips")
    entries, readings = [], []
    for rec in tqdm(records, desc="judge", unit="clip", disable=not progress):
        frames, _ = load_frames(folder / rec["file"])
        reading = read_clip(frames)
        expected = expected_from_scene(Scene.from_dict(rec))
        entries.append({"file": rec["file"], "caption": rec["caption"], "read": reading.to_dict(),
                        "score": score_clip(reading, expected)})
        readings.append(reading)
    return _report(entries, readings)


def judge_path(path: str | os.PathLike, prompt: str | None = None, progress: bool = True) -> dict:
    """The judge's JSON report for a synth folder, a video, a folder of frames or an image.

    With `prompt`, the frames are scored against the attributes the prompt names; without
    it (and outside a synth folder), only what was read is reported.
    """
    path = Path(path)
    expected = parse_prompt(prompt) if prompt is not None else None  # fail before reading
    if path.is_dir() and (path / METADATA).is_file() and prompt is None:
        return judge_world_folder(path, progress)
    frames, _ = load_frames(path)
    reading = read_clip(frames)
    entry = {"file": str(path), "caption": prompt, "read": reading.to_dict(),
             "score": score_clip(reading, expected) if expected else None}
    return _report([entry], [reading])
