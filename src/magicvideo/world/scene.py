"""Scenes of the synthetic world: what is in a clip, drawn deterministically from a seed.

A scene is resolution- and frame-rate-free: objects move in continuous time and in
normalised coordinates (x right, y down, the frame is [0, 1] x [0, 1]). The renderer
evaluates it at any size and any time, which is what makes every target exact.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, replace

import numpy as np

from magicvideo.world import vocab

SPLITS = ("train", "heldout")
# The standard clip: 46 frames at 24 fps = 16 keyframes at 8 fps, 1.875 s. Scenes keep
# their objects inside the frame, apart from each other, over this span.
CLIP_SECONDS = 45 / 24
KEYFRAME_FPS = 8
FULL_FPS = 24

_ALL_COMBINATIONS = tuple(
    c
    for c in itertools.product(vocab.SHAPES, vocab.COLOURS, vocab.MOTIONS)
    if (c[0], c[2]) not in vocab.INVALID_COMBINATIONS
)
TRAIN_COMBINATIONS = tuple(c for c in _ALL_COMBINATIONS if c not in vocab.HELDOUT_COMBINATIONS)
HELDOUT_COMBINATIONS = tuple(c for c in _ALL_COMBINATIONS if c in vocab.HELDOUT_COMBINATIONS)


@dataclass(frozen=True)
class WorldObject:
    """One object: its attributes and its exact motion.

    Position (x, y) and radius are in frame widths at t = 0; vx, vy in frame widths per
    second; growth is d(log radius)/dt; spin in degrees per second.
    """

    shape: str
    colour: str
    motion: str
    x: float
    y: float
    radius: float
    angle: float
    vx: float = 0.0
    vy: float = 0.0
    growth: float = 0.0
    spin: float = 0.0

    def state(self, t: float) -> tuple[float, float, float, float]:
        """(x, y, radius, angle in degrees) at time t seconds."""
        return (
            self.x + self.vx * t,
            self.y + self.vy * t,
            self.radius * math.exp(self.growth * t),
            self.angle + self.spin * t,
        )


@dataclass(frozen=True)
class Scene:
    objects: tuple[WorldObject, ...]
    background: str
    background_seed: int

    def to_dict(self) -> dict:
        return {
            "background": self.background,
            "background_seed": self.background_seed,
            "objects": [asdict(o) for o in self.objects],
        }

    def upright(self) -> Scene:
        """The same scene with every object at angle 0 (each shape's upright pose). Captions never
        name an angle, so a still of it is as right for its caption as the scene itself."""
        return replace(self, objects=tuple(replace(o, angle=0.0) for o in self.objects))

    @classmethod
    def from_dict(cls, data: dict) -> Scene:
        return cls(
            objects=tuple(WorldObject(**o) for o in data["objects"]),
            background=data["background"],
            background_seed=int(data["background_seed"]),
        )


def clip_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of clip `index`: it depends on nothing but (seed, split, index)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    return np.random.default_rng([seed, SPLITS.index(split), index])


def _draw_object(rng: np.random.Generator, combo: tuple[str, str, str]) -> WorldObject:
    shape, colour, motion = combo
    T = CLIP_SECONDS
    margin = 0.03
    angle = float(rng.uniform(-30, 30) if shape == "heart" else rng.uniform(0, 360))
    kw: dict[str, float] = {}
    if motion.startswith("moves"):
        radius = rng.uniform(0.09, 0.14)
        travel = rng.uniform(0.28, 0.5)  # frame widths over the clip
        lo, hi = radius + margin, 1 - radius - margin
        along = rng.uniform(lo, hi - travel)  # start on the axis of motion
        across = rng.uniform(lo, hi)
        sign = -1.0 if motion in ("moves left", "moves up") else 1.0
        start = hi - (along - lo) if sign < 0 else along
        if motion in ("moves left", "moves right"):
            x, y, kw["vx"] = start, across, sign * travel / T
        else:
            x, y, kw["vy"] = across, start, sign * travel / T
    else:
        if motion == "grows":
            radius, factor = rng.uniform(0.07, 0.10), rng.uniform(1.6, 2.0)
        elif motion == "shrinks":
            radius, factor = rng.uniform(0.15, 0.19), 1 / rng.uniform(1.6, 2.0)
        else:
            radius, factor = rng.uniform(0.09, 0.15), 1.0
        reach = radius * max(factor, 1.0) + margin
        x, y = rng.uniform(reach, 1 - reach, size=2)
        kw["growth"] = math.log(factor) / T
        if motion == "spins":
            kw["spin"] = float(rng.choice([-1.0, 1.0]) * rng.uniform(100, 200))
    return WorldObject(shape, colour, motion, float(x), float(y), float(radius), angle,
                       **{k: float(v) for k, v in kw.items()})


def _apart(a: WorldObject, b: WorldObject) -> bool:
    """True when the two objects' bounding circles never come within a gap of each other."""
    for t in np.linspace(0.0, CLIP_SECONDS, 46):
        ax, ay, ar, _ = a.state(float(t))
        bx, by, br, _ = b.state(float(t))
        # Shapes reach past their nominal radius (star points, heart lobes): 1.25 covers all.
        if math.hypot(ax - bx, ay - by) < 1.25 * (ar + br) + 0.03:
            return False
    return True


def sample_scene(rng: np.random.Generator, split: str) -> Scene:
    """Draw a scene of 1 or 2 objects with different colours that never overlap.

    Train scenes use only train combinations; a heldout scene's first object is always a
    held-out combination (its second, if any, may be either).
    """
    pool_first = TRAIN_COMBINATIONS if split == "train" else HELDOUT_COMBINATIONS
    pool_second = TRAIN_COMBINATIONS if split == "train" else _ALL_COMBINATIONS
    background = str(rng.choice(vocab.BACKGROUNDS))
    background_seed = int(rng.integers(0, 2**31 - 1))
    first = _draw_object(rng, pool_first[rng.integers(len(pool_first))])
    objects = [first]
    if rng.random() < 0.4:
        for _ in range(100):
            combo = pool_second[rng.integers(len(pool_second))]
            if combo[1] == first.colour:
                continue
            second = _draw_object(rng, combo)
            if _apart(first, second):
                objects.append(second)
                break
    return Scene(tuple(objects), background, background_seed)
