"""Per-frame reading: find the world's objects in one RGB frame, and name their colour and shape.

Objects are vivid palette colours and every background stays far from the palette in
Lab (at least 34 units, checked in the tests), so a pixel within `COLOUR_TOLERANCE` of a
palette colour is object. Shapes are named by template matching: each object's mask is
moved to a canonical canvas (centred on its centroid, scaled to a fixed equivalent
radius) and compared by IoU against every shape at every angle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
import torch

from magicvideo.world import vocab
from magicvideo.world.render import object_coverage, shape_sdf

COLOUR_TOLERANCE = 25.0  # Lab units; the closest any background comes to the palette is 34
MIN_AREA_FRACTION = 0.002  # smaller specks are noise (the smallest world object is ~0.006)
CANVAS = 40  # canonical canvas side, pixels
CANVAS_RADIUS = 9.0  # equivalent radius (sqrt(area / pi)) of every object on the canvas
# Each shape looks the same after this many degrees of rotation.
SYMMETRY = {"circle": 360.0, "square": 90.0, "triangle": 120.0, "star": 72.0, "heart": 360.0}
_ANGLE_STEP = {"circle": 360.0, "square": 5.0, "triangle": 5.0, "star": 4.0, "heart": 10.0}

COLOUR_NAMES = tuple(vocab.COLOURS)
PALETTE_LAB = cv2.cvtColor(
    np.array([list(vocab.COLOURS.values())], dtype=np.float32), cv2.COLOR_RGB2Lab
)[0]


@dataclass
class Detection:
    """One object found in one frame. Position and area are in frame units."""

    x: float
    y: float
    area: float
    colour: str
    shape_scores: np.ndarray  # best IoU per shape in vocab.SHAPES order
    angles: np.ndarray  # the angle (degrees) of that best match, per shape
    mask: np.ndarray  # bool (H, W)


@lru_cache(maxsize=1)
def template_bank() -> tuple[torch.Tensor, list[tuple[str, float]]]:
    """Every shape at every distinct angle on the canonical canvas, all of equal area."""
    size = CANVAS
    c = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    fine = torch.linspace(-2, 2, 801)
    fy, fx = torch.meshgrid(fine, fine, indexing="ij")
    templates, keys = [], []
    for shape in vocab.SHAPES:
        unit_area = float((shape_sdf(shape, fx, fy) < 0).float().mean()) * 16.0
        radius = CANVAS_RADIUS * math.sqrt(math.pi / unit_area) / size
        for angle in np.arange(0.0, SYMMETRY[shape], _ANGLE_STEP[shape]):
            templates.append(object_coverage(shape, 0.5, 0.5, radius, float(angle), xx, yy, size))
            keys.append((shape, float(angle)))
    return torch.stack(templates).reshape(len(keys), -1), keys


def _canonical(mask: np.ndarray, cx: float, cy: float, area_px: float) -> np.ndarray:
    """Resample a component mask so its centroid is the canvas centre and its
    equivalent radius is CANVAS_RADIUS pixels."""
    scale = CANVAS_RADIUS / math.sqrt(area_px / math.pi)  # canvas pixels per frame pixel
    half = CANVAS / 2
    # cx, cy are pixel-centre coordinates; warpAffine maps pixel centres to pixel centres.
    m = np.array([[scale, 0, half - 0.5 - scale * cx], [0, scale, half - 0.5 - scale * cy]])
    return cv2.warpAffine(mask.astype(np.float32), m, (CANVAS, CANVAS), flags=cv2.INTER_LINEAR)


def match_shapes(canvas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best soft IoU and its angle per shape for one canonical mask."""
    bank, keys = template_bank()
    a = torch.from_numpy(canvas).reshape(1, -1)
    iou = torch.minimum(bank, a).sum(1) / torch.maximum(bank, a).sum(1).clamp(min=1e-6)
    scores = np.zeros(len(vocab.SHAPES))
    angles = np.zeros(len(vocab.SHAPES))
    for (shape, angle), value in zip(keys, iou.tolist()):
        k = vocab.SHAPES.index(shape)
        if value > scores[k]:
            scores[k], angles[k] = value, angle
    return scores, angles


def object_pixels(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For an (H, W, 3) float32 RGB frame in [0, 1]: (object mask, nearest palette index)."""
    lab = cv2.cvtColor(np.ascontiguousarray(frame, dtype=np.float32), cv2.COLOR_RGB2Lab)
    dist = np.linalg.norm(lab[:, :, None, :] - PALETTE_LAB[None, None], axis=-1)
    return dist.min(-1) < COLOUR_TOLERANCE, dist.argmin(-1)


def _refine(lab: np.ndarray, background: np.ndarray, comp: np.ndarray, core: np.ndarray) -> np.ndarray:
    """The object's own outline: near the palette-threshold component, a pixel is object when
    it is nearer the object's colour than the background estimated under it. The edge then
    sits where an anti-aliased, blurred or compressed rim is half object, half background."""
    colour = lab[core].mean(0)
    near = cv2.dilate(comp.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    # Chroma counts half: video and JPEG keep luma at full resolution but chroma at half.
    weight = np.array([1.0, 0.5, 0.5], np.float32)
    closer = np.linalg.norm((lab - colour) * weight, axis=-1) < np.linalg.norm((lab - background) * weight, axis=-1)
    refined = (closer & near) | core
    n, labels = cv2.connectedComponents(refined.astype(np.uint8), connectivity=8)
    keep = np.unique(labels[core])
    return np.isin(labels, keep[keep > 0])


def detect(frame: np.ndarray) -> list[Detection]:
    """All objects in an (H, W, 3) float32 RGB frame in [0, 1], largest first."""
    h, w = frame.shape[:2]
    frame = np.ascontiguousarray(frame, dtype=np.float32)
    mask, nearest = object_pixels(frame)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), 8)
    big = [k for k in range(1, n) if stats[k, cv2.CC_STAT_AREA] >= MIN_AREA_FRACTION * h * w]
    if not big:
        return []
    # The background under the objects, painted in from around them.
    hole = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8))
    rgb8 = (frame.clip(0, 1) * 255).round().astype(np.uint8)
    filled = cv2.inpaint(rgb8, hole, 3, cv2.INPAINT_TELEA).astype(np.float32) / 255
    lab = cv2.cvtColor(frame, cv2.COLOR_RGB2Lab)
    background = cv2.cvtColor(filled, cv2.COLOR_RGB2Lab)
    found = []
    for k in big:
        comp = labels == k
        # Colour and outline start from the component's core: anti-aliased rims blend into
        # the background and can sit nearer a neighbouring palette colour.
        core = cv2.erode(comp.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        core = core if core.any() else comp
        votes = np.bincount(nearest[core], minlength=len(COLOUR_NAMES))
        outline = _refine(lab, background, comp, core)
        ys, xs = np.nonzero(outline)
        area_px = float(len(xs))
        cx, cy = float(xs.mean()), float(ys.mean())
        scores, angles = match_shapes(_canonical(outline, cx, cy, area_px))
        found.append(
            Detection(
                x=(cx + 0.5) / w, y=(cy + 0.5) / h, area=area_px / (h * w),
                colour=COLOUR_NAMES[int(votes.argmax())],
                shape_scores=scores, angles=angles, mask=outline,
            )
        )
    return sorted(found, key=lambda d: -d.area)
