"""`magicvideo study auto --rater judge`: an automatic rater that votes on the study's pairs from
the judge's readings, so the protocol runs without people.

Per video: the judge reads the frames against the prompt (world prompts) and scores the share of
asked attributes it finds (each object's shape, colour and motion, and the background) and its
temporal steadiness (flicker, track jitter). The video that gets more attributes right wins; on a
tie in attributes, one with clearly steadier frames (flicker or jitter a quarter lower) wins; else
the vote is "same". The rule stands for the paper's three criteria in one overall vote: faithful
content, consistent motion, no structural errors (wrong or missing shapes).
"""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

from tqdm import tqdm

from magicvideo.judge.judge import read_clip, score_clip
from magicvideo.judge.prompt import parse_prompt
from magicvideo.media import load_frames
from magicvideo.study.build import media_dir
from magicvideo.study.db import StudyError, add_rater, vote

RATERS = ("judge",)
STEADIER = 0.75  # a tie in attributes is broken by a video this much steadier or more


def video_score(path: Path, prompt: str) -> dict:
    frames = load_frames(path)[0]
    expected = parse_prompt(prompt)
    if frames.shape[1] == 1:  # a still (stage 1's image) cannot show motion: not asked of it
        expected = dataclasses.replace(expected, objects=[(s, c, None) for s, c, _ in expected.objects])
    reading = read_clip(frames)
    score = score_clip(reading, expected)
    asked = score["objects_expected"] * (3 if score["motion"] is not None else 2) + (score["background"] is not None)
    right = score["shape"] + score["colour"] + (score["motion"] or 0) + bool(score["background"])
    return {"right": right / max(asked, 1), "flicker": reading.flicker, "jitter": reading.track_jitter}


def decide(left: dict, right: dict) -> str:
    if abs(left["right"] - right["right"]) > 1e-9:
        return "left" if left["right"] > right["right"] else "right"
    for key in ("flicker", "jitter"):
        if left[key] < STEADIER * right[key]:
            return "left"
        if right[key] < STEADIER * left[key]:
            return "right"
    return "same"


def auto_rate(db: sqlite3.Connection, db_path: str | Path, rater: str = "judge", progress: bool = True) -> int:
    """Vote on every pair the automatic rater has not voted on; returns how many votes it cast."""
    if rater not in RATERS:
        raise StudyError(f"unknown automatic rater {rater!r}; expected one of {RATERS}")
    row = db.execute("SELECT * FROM raters WHERE name = ?", (rater,)).fetchone()
    if row is not None and row["kind"] != "auto":
        raise StudyError(f"a human rater is called {rater!r}; the automatic rater cannot vote as them")
    row = row or add_rater(db, rater, kind="auto")
    pairs = db.execute("""
        SELECT p.id, p.prompt, vl.source AS left_source, vl.file AS left_file, vr.source AS right_source,
               vr.file AS right_file
        FROM pairs p JOIN videos vl ON vl.id = p.left_video JOIN videos vr ON vr.id = p.right_video
        WHERE p.id NOT IN (SELECT pair FROM votes WHERE rater = ?) ORDER BY p.position""", (row["id"],)).fetchall()
    for prompt in {p["prompt"] for p in pairs}:
        parse_prompt(prompt)  # a prompt the judge cannot read fails here, before any vote
    media = media_dir(db_path)
    cache: dict[str, dict] = {}

    def score(source: str, file: str, prompt: str) -> dict:
        # the original when it is still there (the study's copy is re-encoded), else the copy
        path = Path(source) if Path(source).is_file() else media / file
        if str(path) not in cache:
            cache[str(path)] = video_score(path, prompt)
        return cache[str(path)]

    for pair in tqdm(pairs, desc=f"rater {rater}", disable=not progress):
        choice = decide(score(pair["left_source"], pair["left_file"], pair["prompt"]),
                        score(pair["right_source"], pair["right_file"], pair["prompt"]))
        vote(db, row["id"], pair["id"], choice)  # its own transaction: a kill keeps the votes cast
    return len(pairs)
