"""Measure stage 1 with the judge: one image per world prompt, read back and scored against the
prompt's scene (shape, colour, background; motion cannot be seen in one image)."""

from __future__ import annotations

import re
from collections import defaultdict

import torch
from tqdm import tqdm

from magicvideo.judge.judge import Expected, aggregate, read_clip, score_clip
from magicvideo.world import draw_clip, vocab


def unseen_phrasings(caption: str) -> list[str]:
    """Which held-out parts of the vocabulary a caption uses: 'template', or the attribute
    ('shape', 'colour', 'motion', 'background') whose held-out word it contains."""
    found = []
    for template in vocab.HELDOUT_TEMPLATES:
        head = template.split("{")[0].strip() or template.split("}")[-1].strip()
        if head and head in caption:
            found.append("template")
            break
    tables = {"shape": vocab.SHAPE_WORDS, "colour": vocab.COLOUR_WORDS, "motion": vocab.MOTION_WORDS,
              "background": vocab.BACKGROUND_WORDS}
    for name, table in tables.items():
        for words in table.values():
            held = words[-1]
            phrases = held if isinstance(held, tuple) else (held,)
            if any(re.search(rf"\b{re.escape(p)}\b", caption) for p in phrases):
                found.append(name)
                break
    return found


def expected(clip) -> Expected:
    """What the judge should read in a still of `clip`: its objects' shapes and colours, its background."""
    return Expected([(o.shape, o.colour, None) for o in clip.scene.objects], clip.scene.background)


def judge_images(clips: list, images: torch.Tensor | list) -> dict:
    """The judge's aggregate report on one image per clip, (3, H, W) in [0, 1] each."""
    readings = [read_clip(image) for image in images]
    return aggregate([score_clip(r, expected(c)) for c, r in zip(clips, readings, strict=True)], readings)


def evaluate_t2i(stage, split: str = "heldout", count: int = 200, seed: int = 777, image_seed: int = 0,
                 steps: int | None = None, guidance: float | None = None, batch: int = 25,
                 progress: bool = True) -> dict:
    """Judge accuracy of `stage` on the first `count` prompts of (seed, split), one image each
    at `image_seed`. Held-out prompts are also broken down by which unseen phrasing they use."""
    clips = [draw_clip(seed, split, i) for i in range(count)]
    scores, readings, groups = [], [], defaultdict(list)
    for start in tqdm(range(0, count, batch), desc=f"t2i on {split} prompts", disable=not progress):
        chunk = clips[start : start + batch]
        images = stage([c.caption for c in chunk], seed=image_seed, steps=steps, guidance=guidance).images
        for clip, image in zip(chunk, images):
            reading = read_clip(image)
            score = score_clip(reading, expected(clip))
            scores.append(score)
            readings.append(reading)
            if split == "heldout":
                for part in unseen_phrasings(clip.caption) or ["combination only"]:
                    groups[part].append((score, reading))
    report = aggregate(scores, readings)
    report["accuracy"].pop("motion")
    report["count"] = object_count(clips, readings)
    report["by_shape"] = shape_accuracy(clips, scores, readings)
    report["by_unseen_phrasing"] = {
        part: {**{k: round(v, 4) for k, v in aggregate(*map(list, zip(*pairs)))["accuracy"].items()
                  if v is not None}, "prompts": len(pairs)}
        for part, pairs in sorted(groups.items())
    } if groups else None
    return report


def shape_accuracy(clips: list, scores: list[dict], readings: list) -> dict[str, float]:
    """Shape right, by the shape each object was asked as. Why: one shape figure hides which
    shapes a stage can draw. Read it with the judge's habits in mind: it reads an irregular blob
    as a heart, so a stage that draws only blobs scores well on hearts and nowhere else."""
    right, asked = defaultdict(int), defaultdict(int)
    for clip, score, reading in zip(clips, scores, readings, strict=True):
        found = {a: reading.objects[b] for a, b in score["matches"]}
        for a, obj in enumerate(clip.scene.objects):
            asked[obj.shape] += 1
            right[obj.shape] += int(a in found and found[a].shape == obj.shape)
    return {shape: round(right[shape] / asked[shape], 4) for shape in sorted(asked)}


def object_count(clips: list, readings: list) -> dict[str, float]:
    """Objects the judge found per image against those the prompts name, and the share of images
    with more than named. Why: a stage that draws an object wherever its noise leans to one (extra
    blobs of the prompt's colours) reads low on shape for a reason the shape table does not show."""
    found = [len(r.objects) for r in readings]
    named = [len(c.scene.objects) for c in clips]
    return {"found": sum(found) / len(found), "named": sum(named) / len(named),
            "too_many": sum(f > n for f, n in zip(found, named, strict=True)) / len(found)}


@torch.no_grad()
def ground_truth_accuracy(split: str = "heldout", count: int = 200, seed: int = 777, size: int = 128) -> dict:
    """The same scoring on the world's own renders: the judge's ceiling for these prompts."""
    from magicvideo.world import render_frames

    clips = [draw_clip(seed, split, i) for i in range(count)]
    return judge_images(clips, [render_frames(c.scene, size, [0.0])[:, 0] for c in clips])["accuracy"]
