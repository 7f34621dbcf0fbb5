"""`magicvideo study new`: find each system's video per prompt, pair systems on the same prompt,
and write the study: its database and a browser-playable copy of every video beside it. A
system's "videos" may be stills (image files named by their prompt): stage 1's images are
compared the same way, shown as one-second still videos."""

from __future__ import annotations

import itertools
import json
import os
import random
import shutil
import sqlite3
from pathlib import Path

from magicvideo.media import IMAGE_SUFFIXES
from magicvideo.study.db import StudyError, connect, transaction

VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif")
STILL_FPS, STILL_FRAMES = 8, 8  # a still's browser copy: one second of the same frame
RUN_FILES = ("final.mp4", "hires.mp4", "keyframes.mp4")  # what `generate` writes, last stage first


def media_dir(db_path: str | Path) -> Path:
    """Where a study keeps its copies of the videos: STUDY.db -> STUDY.media/."""
    db_path = Path(db_path)
    return db_path.with_name(db_path.stem + ".media")


def find_videos(source: str | Path) -> dict[str, Path]:
    """prompt -> video in `source`: run folders as `magicvideo generate` writes them (the prompt
    from manifest.json, the last stage's video), or video (or image) files whose name is the prompt."""
    source = Path(source)
    if not source.is_dir():
        raise StudyError(f"no folder {source}")
    found: dict[str, Path] = {}
    for entry in sorted(source.iterdir()):
        if entry.name.startswith("."):  # hidden, or a file a killed writer left half-written
            continue
        if entry.is_dir() and (entry / "manifest.json").is_file():
            try:
                prompt = json.loads((entry / "manifest.json").read_text())["settings"]["prompt"]
            except (ValueError, KeyError, TypeError):
                raise StudyError(f"{entry / 'manifest.json'} is not a run manifest") from None
            video = next((entry / f for f in RUN_FILES if (entry / f).is_file()), None)
            if video is None:
                continue  # a run that has not reached a video stage
        elif entry.is_file() and entry.suffix.lower() in VIDEO_SUFFIXES + IMAGE_SUFFIXES:
            prompt, video = entry.stem, entry
        else:
            continue
        prompt = " ".join(prompt.split())
        if prompt in found:
            raise StudyError(f"{source} holds two videos for the prompt {prompt!r}")
        found[prompt] = video
    if not found:
        raise StudyError(f"{source} holds no videos (run folders with manifest.json, or video or image files)")
    return found


def parse_system(spec: str) -> tuple[str, Path]:
    name, sep, folder = spec.partition("=")
    if not sep or not name.strip() or not folder:
        raise StudyError(f"--system takes NAME=RUNS_DIR, got {spec!r}")
    return name.strip(), Path(folder)


def plan_pairs(videos: dict[str, dict[str, Path]], prompts: list[str] | None, pairs: int | None,
               seed: int, against: str | None = None) -> list[tuple[str, str, str]]:
    """(prompt, left system, right system) for every prompt all systems have and every two
    systems (with `against`: that system and each other one, the paper's "ours vs theirs"), each
    pair's sides drawn at random, the whole list shuffled (and cut to `pairs`)."""
    names = list(videos)
    if against is not None and against not in names:
        raise StudyError(f"--against {against!r} is not one of the systems {names}")
    common = set.intersection(*(set(v) for v in videos.values()))
    if prompts is not None:
        missing = [p for p in prompts if p not in common]
        if missing:
            raise StudyError(f"{len(missing)} listed prompt(s) lack a video in some system, e.g. {missing[0]!r}")
        chosen = prompts
    else:
        chosen = sorted(common)
    if not chosen:
        raise StudyError("no prompt has a video in every system")
    rng = random.Random(seed)
    plan = []
    for prompt in chosen:
        for a, b in itertools.combinations(names, 2):
            if against is not None and against not in (a, b):
                continue
            plan.append((prompt, *((a, b) if rng.random() < 0.5 else (b, a))))
    rng.shuffle(plan)
    if pairs is not None:
        if pairs < 1:
            raise StudyError(f"--pairs must be at least 1, got {pairs}")
        plan = plan[:pairs]
    return plan


def browser_copy(video: Path, out: Path) -> None:
    """`video` as WebM (VP9, yuv420p, sides padded to even): plays in every browser. An image
    becomes a one-second still."""
    import imageio_ffmpeg

    from magicvideo.media import atomic_path, load_frames, to_uint8

    frames, fps = load_frames(video)
    if fps is None:  # a still
        frames, fps = frames[:, :1].expand(-1, STILL_FRAMES, -1, -1), STILL_FPS
    frames = to_uint8(frames)  # (F, H, W, 3)
    h, w = frames.shape[1:3]
    with atomic_path(out) as tmp:
        writer = imageio_ffmpeg.write_frames(
            str(tmp), (w, h), fps=fps, codec="libvpx-vp9", pix_fmt_out="yuv420p", quality=None, bitrate=None,
            macro_block_size=1, output_params=["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-crf", "20", "-b:v", "0",
                                               "-f", "webm"])
        writer.send(None)
        for frame in frames:
            writer.send(frame.copy(order="C"))
        writer.close()


def new_study(path: str | Path, systems: list[str], prompts_file: str | None = None, pairs: int | None = None,
              seed: int = 0, against: str | None = None, progress: bool = True) -> sqlite3.Connection:
    """Create the study at `path` from `--system NAME=DIR` specs; returns its open database."""
    from tqdm import tqdm

    path = Path(path)
    specs = [parse_system(s) for s in systems]
    if len(specs) < 2:
        raise StudyError("a study compares at least two systems (--system NAME=DIR, twice or more)")
    if len({n for n, _ in specs}) != len(specs):
        raise StudyError("each --system needs its own NAME")
    if path.exists() or media_dir(path).exists():
        raise StudyError(f"{path} (or {media_dir(path)}) exists already; a new study needs a new file")
    videos = {name: find_videos(folder) for name, folder in specs}
    prompts = None
    if prompts_file is not None:
        if not Path(prompts_file).is_file():
            raise StudyError(f"no prompts file {prompts_file}")
        prompts = [" ".join(line.split()) for line in Path(prompts_file).read_text().splitlines() if line.strip()]
    plan = plan_pairs(videos, prompts, pairs, seed, against)  # every check above passes before anything is written
    used = sorted({(s, p) for p, a, b in plan for s in (a, b)})
    # built under temporary names and renamed at the end: a crash leaves no half study behind
    partial = path.with_name(f".{path.name}.partial")
    for leftover in (partial, media_dir(partial)):
        if leftover.is_dir():
            shutil.rmtree(leftover)
        elif leftover.exists():
            leftover.unlink()
    media_dir(partial).mkdir(parents=True)
    db = connect(partial, create=True)
    ids: dict[tuple[str, str], int] = {}
    with transaction(db):
        db.execute("INSERT INTO meta VALUES ('seed', ?)", (str(seed),))
        system_ids = {name: db.execute("INSERT INTO systems (name, source, position) VALUES (?, ?, ?)",
                                       (name, str(folder.resolve()), i)).lastrowid
                      for i, (name, folder) in enumerate(specs)}
        for k, (system, prompt) in enumerate(tqdm(used, desc="copy videos", disable=not progress)):
            file = f"{k:05d}.webm"
            browser_copy(videos[system][prompt], media_dir(partial) / file)
            ids[system, prompt] = db.execute(
                "INSERT INTO videos (system, prompt, source, file) VALUES (?, ?, ?, ?)",
                (system_ids[system], prompt, str(videos[system][prompt].resolve()), file)).lastrowid
        db.executemany("INSERT INTO pairs (prompt, left_video, right_video, position) VALUES (?, ?, ?, ?)",
                       [(p, ids[a, p], ids[b, p], i) for i, (p, a, b) in enumerate(plan)])
    db.close()  # the WAL is folded back into the file, so the rename moves one file
    os.replace(media_dir(partial), media_dir(path))
    os.replace(partial, path)
    return connect(path)
