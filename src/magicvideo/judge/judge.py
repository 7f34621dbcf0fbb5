"""The judge: read shape, colour, motion and background back off frames, and score them.

`read_clip` turns frames into a `ClipReading` (objects with their tracks, the background,
temporal metrics). `score_clip` compares a reading with what was asked for (a scene's
ground truth or a parsed prompt). `judge_clips` aggregates many clips into the JSON that
`magicvideo judge` prints.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np
import torch

from magicvideo.judge.segment import SYMMETRY, Detection, detect
from magicvideo.world import vocab
from magicvideo.world.render import render_background

# Motion thresholds over a whole clip, chosen halfway (in log terms) between "still" and
# the smallest motion the world draws: travel >= 0.28 frame widths, area x2.56, 187 deg.
MIN_TRAVEL = 0.10  # frame widths
MIN_LOG_AREA = math.log(1.6)
MIN_ROTATION = 60.0  # degrees


@dataclass
class Expected:
    """What a clip should show. motion None: not scored; background None: not scored."""

    objects: list[tuple[str, str, str | None]]  # (shape, colour, motion)
    background: str | None


@dataclass
class ObjectReading:
    shape: str
    colour: str
    motion: str | None  # None for a single frame
    track: list[tuple[int, float, float, float]] = field(default_factory=list)  # (frame, x, y, area)
    travel: tuple[float, float] = (0.0, 0.0)
    log_area_change: float = 0.0
    rotation: float = 0.0


@dataclass
class ClipReading:
    objects: list[ObjectReading]
    background: str
    frames: int
    flicker: float  # mean |frame_t - frame_t-1| on background pixels, [0, 1] units
    track_jitter: float  # mean |second difference| of object centroids, frame widths
    count_stability: float  # fraction of frames showing the clip's modal object count

    def to_dict(self) -> dict:
        return {
            "background": self.background,
            "objects": [
                {"shape": o.shape, "colour": o.colour, "motion": o.motion,
                 "travel": [round(v, 4) for v in o.travel],
                 "log_area_change": round(o.log_area_change, 4), "rotation": round(o.rotation, 1)}
                for o in self.objects
            ],
            "frames": self.frames,
            "flicker": self.flicker,
            "track_jitter": self.track_jitter,
            "count_stability": self.count_stability,
        }


# ---------------------------------------------------------------- background
def _band_features(frame: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Mean Lab colour of the kept pixels in 4 horizontal bands: a 12-vector."""
    lab = cv2.cvtColor(np.ascontiguousarray(frame, dtype=np.float32), cv2.COLOR_RGB2Lab)
    h = lab.shape[0]
    overall = lab[keep].mean(0) if keep.any() else lab.reshape(-1, 3).mean(0)
    feats = []
    for b in range(4):
        rows = slice(b * h // 4, (b + 1) * h // 4)
        sel = keep[rows]
        feats.append(lab[rows][sel].mean(0) if sel.sum() > 4 else overall)
    return np.concatenate(feats)


@lru_cache(maxsize=1)
def _background_prototypes() -> tuple[np.ndarray, tuple[str, ...]]:
    """Mean band features of each background, from the renderer itself (8 seeds each)."""
    protos = []
    for bg in vocab.BACKGROUNDS:
        feats = []
        for seed in range(8):
            img = render_background(bg, 1000 + seed, 32, 0.0).permute(1, 2, 0).numpy()
            feats.append(_band_features(img, np.ones(img.shape[:2], bool)))
        protos.append(np.mean(feats, 0))
    return np.stack(protos), vocab.BACKGROUNDS


def classify_background(frames: np.ndarray, object_masks: np.ndarray) -> str:
    """Nearest prototype for the band features of up to 4 frames, objects left out."""
    protos, names = _background_prototypes()
    picks = np.linspace(0, len(frames) - 1, min(4, len(frames))).round().astype(int)
    feats = np.mean([_band_features(frames[i], ~object_masks[i]) for i in picks], 0)
    return names[int(np.linalg.norm(protos - feats, axis=1).argmin())]


# ---------------------------------------------------------------- tracks
def _link(per_frame: list[list[Detection]]) -> list[list[tuple[int, Detection]]]:
    """Link detections frame to frame, closest pairs first; a track may skip 3 frames."""
    tracks: list[list[tuple[int, Detection]]] = []
    for f, dets in enumerate(per_frame):
        live = [t for t in tracks if f - t[-1][0] <= 3]
        pairs = sorted(
            (math.hypot(t[-1][1].x - d.x, t[-1][1].y - d.y), a, b)
            for a, t in enumerate(live) for b, d in enumerate(dets)
        )
        taken_tracks, taken_dets = set(), set()
        for dist, a, b in pairs:
            if a in taken_tracks or b in taken_dets or dist > 0.25:
                continue
            live[a].append((f, dets[b]))
            taken_tracks.add(a)
            taken_dets.add(b)
        tracks += [[(f, d)] for b, d in enumerate(dets) if b not in taken_dets]
    return tracks


def _rotation(angles: list[float], period: float) -> float:
    """Total rotation of an angle track whose angles are known modulo `period`: the median
    frame-to-frame step (each step taken the short way round) times the number of steps.
    The median ignores the odd frame whose angle a blurred outline leaves ambiguous."""
    steps = [(a1 - a0 + period / 2) % period - period / 2 for a0, a1 in zip(angles, angles[1:])]
    return float(np.median(steps)) * len(steps) if steps else 0.0


def _read_track(track: list[tuple[int, Detection]], n_frames: int) -> ObjectReading:
    scores = np.sum([d.shape_scores for _, d in track], 0)
    k = int(scores.argmax())
    shape = vocab.SHAPES[k]
    colours = [d.colour for _, d in track]
    colour = max(set(colours), key=colours.count)
    reading = ObjectReading(shape, colour, None, [(f, d.x, d.y, d.area) for f, d in track])
    if n_frames < 2 or len(track) < 2:
        return reading
    f = np.array([t[0] for t in track], float)
    span = n_frames - 1
    # Least-squares slopes are robust to a noisy frame; times the clip length = total change.
    vx = np.polyfit(f, [d.x for _, d in track], 1)[0] * span
    vy = np.polyfit(f, [d.y for _, d in track], 1)[0] * span
    va = np.polyfit(f, np.log([d.area for _, d in track]), 1)[0] * span
    rotation = _rotation([d.angles[k] for _, d in track], SYMMETRY[shape])
    reading.travel, reading.log_area_change, reading.rotation = (vx, vy), va, rotation
    strength = {
        "moves": math.hypot(vx, vy) / MIN_TRAVEL,
        "scale": abs(va) / MIN_LOG_AREA,
        "spins": abs(rotation) / MIN_ROTATION if shape != "circle" else 0.0,
    }
    kind = max(strength, key=strength.get)
    if strength[kind] < 1.0:
        reading.motion = "stays still"
    elif kind == "moves":
        if abs(vx) >= abs(vy):
            reading.motion = "moves right" if vx > 0 else "moves left"
        else:
            reading.motion = "moves down" if vy > 0 else "moves up"
    elif kind == "scale":
        reading.motion = "grows" if va > 0 else "shrinks"
    else:
        reading.motion = "spins"
    return reading


def object_neighbourhoods(per_frame: list[list[Detection]], shape: tuple[int, int, int]) -> np.ndarray:
    """(F, H, W) True on each frame's objects and within 2 px of them: what background measures
    (flicker, the background's class) leave out, so that a soft edge does not count as background."""
    masks = np.zeros(shape, bool)
    for i, dets in enumerate(per_frame):
        for d in dets:
            masks[i] |= d.mask
    return np.stack([cv2.dilate(m.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0 for m in masks])


def read_clip(frames: torch.Tensor | np.ndarray) -> ClipReading:
    """Read a clip (3, F, H, W) or an image (3, H, W), float in [0, 1]."""
    video = torch.as_tensor(frames, dtype=torch.float32)
    if video.ndim == 3:
        video = video.unsqueeze(1)
    if video.ndim != 4 or video.shape[0] != 3:
        raise ValueError(f"expected frames (3, F, H, W) or an image (3, H, W), got {tuple(video.shape)}")
    hwc = video.permute(1, 2, 3, 0).contiguous().numpy()  # (F, H, W, 3)
    n = hwc.shape[0]
    per_frame = [detect(hwc[i]) for i in range(n)]
    counts = [len(d) for d in per_frame]
    modal = max(set(counts), key=counts.count)
    tracks = [t for t in _link(per_frame) if len(t) >= max(1, n // 2)]
    tracks.sort(key=lambda t: -np.mean([d.area for _, d in t]))
    objects = [_read_track(t, n) for t in tracks]

    grown = object_neighbourhoods(per_frame, hwc.shape[:3])
    flicker = 0.0
    if n > 1:
        keep = ~(grown[1:] | grown[:-1])
        diff = np.abs(hwc[1:] - hwc[:-1]).mean(-1)
        flicker = float(diff[keep].mean()) if keep.any() else 0.0
    jitter = [
        math.hypot(a[1] - 2 * b[1] + c[1], a[2] - 2 * b[2] + c[2])
        for o in objects for a, b, c in zip(o.track, o.track[1:], o.track[2:])
    ]
    return ClipReading(
        objects=objects,
        background=classify_background(hwc, grown),
        frames=n,
        flicker=flicker,
        track_jitter=float(np.mean(jitter)) if jitter else 0.0,
        count_stability=counts.count(modal) / n,
    )


# ---------------------------------------------------------------- scoring
def _pairings(n_exp: int, n_got: int):
    """Every one-to-one pairing of expected and found objects, as (expected, found) pairs."""
    if n_exp <= n_got:
        for perm in itertools.permutations(range(n_got), n_exp):
            yield list(zip(range(n_exp), perm))
    else:
        for perm in itertools.permutations(range(n_exp), n_got):
            yield list(zip(perm, range(n_got)))


def score_clip(reading: ClipReading, expected: Expected) -> dict:
    """Per-attribute correctness of one clip: counts of right objects, and flags."""
    exp, got = expected.objects, reading.objects[:6]  # the largest six bound the search

    def agree(e, g) -> list[bool]:
        return [e[0] == g.shape, e[1] == g.colour, e[2] is None or e[2] == g.motion]

    best: list[tuple[int, int]] = []
    best_hits = -1
    for pairs in _pairings(len(exp), len(got)):
        hits = sum(sum(agree(exp[a], got[b])) for a, b in pairs)
        if hits > best_hits:
            best, best_hits = pairs, hits
    right = np.zeros((len(exp), 3), bool)
    for a, b in best:
        right[a] = agree(exp[a], got[b])
    found = {a: got[b] for a, b in best}
    motion_scored = any(e[2] is not None for e in exp) and reading.frames > 1
    background_ok = expected.background is None or expected.background == reading.background
    return {
        "objects_expected": len(exp),
        "objects_found": len(got),
        "shape": int(right[:, 0].sum()),
        "colour": int(right[:, 1].sum()),
        "motion": int(right[:, 2].sum()) if motion_scored else None,
        "background": background_ok if expected.background is not None else None,
        "all": bool(right.all() and len(exp) == len(reading.objects) and background_ok),
        "matches": [[a, b] for a, b in sorted(best)],  # (expected index, found index)
        # (motion asked, motion read) per expected object; read None: no object matched to it
        "motions": [[exp[a][2], found[a].motion if a in found else None] for a in range(len(exp))]
        if motion_scored else None,
    }


def aggregate(scores: list[dict], readings: list[ClipReading]) -> dict:
    """Accuracy per attribute (objects for shape/colour/motion, clips for the rest)."""
    n_obj = sum(s["objects_expected"] for s in scores)
    moving = [s for s in scores if s["motion"] is not None]
    backs = [s for s in scores if s["background"] is not None]
    acc = {
        "shape": sum(s["shape"] for s in scores) / max(n_obj, 1),
        "colour": sum(s["colour"] for s in scores) / max(n_obj, 1),
        "background": sum(s["background"] for s in backs) / len(backs) if backs else None,
        "motion": (sum(s["motion"] for s in moving) / max(sum(s["objects_expected"] for s in moving), 1)
                   if moving else None),
        "all": sum(s["all"] for s in scores) / max(len(scores), 1),
    }
    temporal = {
        key: float(np.mean([getattr(r, key) for r in readings]))
        for key in ("flicker", "track_jitter", "count_stability")
    }
    report = {"accuracy": acc, "temporal": temporal, "clips": len(scores)}
    if moving:
        report["motion_confusion"] = motion_confusion(moving)
    return report


def motion_confusion(scores: list[dict]) -> dict[str, dict[str, int]]:
    """{motion asked: {motion read: objects}} over clips scored for motion; an object the judge
    found no match for is read as "not found". Where a stage's motion errors go: to "stays still"
    (it does not move), to the opposite direction, or to another kind."""
    table: dict[str, Counter] = {}
    for s in scores:
        for asked, read in s.get("motions") or []:
            if asked is not None:
                table.setdefault(asked, Counter())[read or "not found"] += 1
    return {asked: dict(reads) for asked, reads in table.items()}
