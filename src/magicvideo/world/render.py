"""The renderer: scenes to pixels at any resolution and any frame rate.

Shapes are drawn from exact signed distance functions with one-pixel analytic
anti-aliasing; backgrounds are continuous procedural textures. Every frame is a pure
function of (scene, size, t), computed frame by frame with the same ops, so the 8 fps
frame k is bit-identical to the 24 fps frame 3k (k/8 and 3k/24 round to the same float).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch

from magicvideo.world import vocab
from magicvideo.world.scene import Scene, WorldObject


def _polygon(radii: Sequence[float], start_deg: float) -> torch.Tensor:
    n = len(radii)
    ang = [math.radians(start_deg + 360.0 * i / n) for i in range(n)]
    return torch.tensor([[r * math.cos(a), r * math.sin(a)] for r, a in zip(radii, ang)])


# Unit shapes, y up, centred on their area centroid, sized to look alike at radius 1.
_TRIANGLE = _polygon([1.25] * 3, 90.0)
_STAR = _polygon([1.3, 0.55] * 5, 90.0)


def _sd_polygon(px: torch.Tensor, py: torch.Tensor, verts: torch.Tensor) -> torch.Tensor:
    """Signed distance to a closed polygon (negative inside); exact, crossing-number sign."""
    dist2 = torch.full_like(px, float("inf"))
    sign = torch.ones_like(px)
    n = verts.shape[0]
    for i in range(n):
        ax, ay = verts[i].tolist()
        bx, by = verts[(i + 1) % n].tolist()
        ex, ey = bx - ax, by - ay
        wx, wy = px - ax, py - ay
        h = ((wx * ex + wy * ey) / (ex * ex + ey * ey)).clamp(0.0, 1.0)
        dist2 = torch.minimum(dist2, (wx - ex * h) ** 2 + (wy - ey * h) ** 2)
        c1, c2, c3 = py >= ay, py < by, ex * wy > ey * wx
        flip = (c1 & c2 & c3) | (~c1 & ~c2 & ~c3)
        sign = torch.where(flip, -sign, sign)
    return sign * dist2.sqrt()


def _sd_heart_raw(px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """Exact heart SDF (I. Quilez's construction: two arcs and a V), tip at the origin, y up."""
    px = px.abs()
    upper = (px - 0.25) ** 2 + (py - 0.75) ** 2
    arc = upper.sqrt() - math.sqrt(2.0) / 4.0
    m = 0.5 * (px + py).clamp(min=0.0)
    v = torch.minimum(px**2 + (py - 1.0) ** 2, (px - m) ** 2 + (py - m) ** 2).sqrt()
    return torch.where(px + py > 1.0, arc, v * torch.sign(px - py))


@lru_cache(maxsize=1)
def _heart_frame() -> tuple[float, float]:
    """(scale, y of the area centroid) that size the heart like the other shapes."""
    g = torch.linspace(-0.5, 1.5, 801, dtype=torch.float64)
    yy, xx = torch.meshgrid(g, g, indexing="ij")
    inside = (_sd_heart_raw(xx, yy) < 0).double()
    cy = float((inside * yy).sum() / inside.sum())
    area = float(inside.sum()) * float(g[1] - g[0]) ** 2
    return math.sqrt(math.pi * 0.8 / area), cy  # 80% of the unit circle's area


def shape_sdf(shape: str, px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """Signed distance, in shape units, from points (px, py) (y up) to a unit `shape`."""
    if shape == "circle":
        return (px**2 + py**2).sqrt() - 1.0
    if shape == "square":
        a = 0.88  # half side: the square's area is 99% of the unit circle's
        qx, qy = px.abs() - a, py.abs() - a
        outside = (qx.clamp(min=0) ** 2 + qy.clamp(min=0) ** 2).sqrt()
        return outside + torch.maximum(qx, qy).clamp(max=0.0)
    if shape == "triangle":
        return _sd_polygon(px, py, _TRIANGLE)
    if shape == "star":
        return _sd_polygon(px, py, _STAR)
    if shape == "heart":
        scale, cy = _heart_frame()
        return _sd_heart_raw(px / scale, py / scale + cy) * scale
    raise ValueError(f"unknown shape {shape!r}; expected one of {vocab.SHAPES}")


def _grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    c = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    return xx, yy


def object_coverage(
    shape: str, x: float, y: float, radius: float, angle: float, xx: torch.Tensor,
    yy: torch.Tensor, size: int,
) -> torch.Tensor:
    """Anti-aliased coverage in [0, 1] of a shape at (x, y, radius, angle) on a grid."""
    a = math.radians(angle)
    dx, dy = xx - x, -(yy - y)  # to y-up shape space
    px = (math.cos(a) * dx + math.sin(a) * dy) / radius
    py = (-math.sin(a) * dx + math.cos(a) * dy) / radius
    sd_pixels = shape_sdf(shape, px, py) * radius * size
    return (0.5 - sd_pixels).clamp(0.0, 1.0)


def _object_state_coverage(obj: WorldObject, t: float, xx, yy, size) -> torch.Tensor:
    x, y, r, ang = obj.state(t)
    return object_coverage(obj.shape, x, y, r, ang, xx, yy, size)


# ---------------------------------------------------------------- backgrounds
def _waves(rng: np.random.Generator, k: int, fmin: float, fmax: float, drift: float):
    """A smooth random field in about [-1, 1]: k drifting plane waves."""
    freq = rng.uniform(fmin, fmax, k)
    theta = rng.uniform(0, 2 * np.pi, k)
    phase = rng.uniform(0, 2 * np.pi, k)
    amp = rng.uniform(0.5, 1.0, k)
    speed = rng.uniform(-drift, drift, k)
    amp = amp / amp.sum()

    def field(xx: torch.Tensor, yy: torch.Tensor, t: float) -> torch.Tensor:
        out = torch.zeros_like(xx)
        for f, th, ph, a, s in zip(freq, theta, phase, amp, speed):
            arg = 2 * math.pi * f * (math.cos(th) * xx + math.sin(th) * yy)
            out = out + float(a) * torch.sin(arg + float(ph + 2 * np.pi * s * t))
        return out

    return field


def _lerp(c0, c1, w: torch.Tensor) -> torch.Tensor:
    c0 = torch.tensor(c0, dtype=torch.float32).view(3, 1, 1)
    c1 = torch.tensor(c1, dtype=torch.float32).view(3, 1, 1)
    return c0 + (c1 - c0) * w


def _night_sky(rng, xx, yy, t, size):
    nebula = _waves(rng, 6, 1.0, 3.0, 0.05)
    img = _lerp((0.02, 0.03, 0.10), (0.07, 0.06, 0.20), yy)
    img = img + 0.03 * (nebula(xx, yy, t) + 1) * torch.tensor([0.6, 0.3, 0.8]).view(3, 1, 1)
    n = 60
    sx, sy = rng.uniform(0, 1, n), rng.uniform(0, 1, n)
    sigma, peak = rng.uniform(0.002, 0.004, n), rng.uniform(0.25, 0.5, n)
    rate, phase = rng.uniform(0.5, 1.5, n), rng.uniform(0, 2 * np.pi, n)
    pix = 0.5 / size  # prefilter: a star never gets narrower than half a pixel
    glow = torch.zeros_like(xx)
    for i in range(n):
        s2 = sigma[i] ** 2 + pix**2
        amp = peak[i] * sigma[i] ** 2 / s2 * (0.8 + 0.2 * math.sin(2 * math.pi * rate[i] * t + phase[i]))
        # Only the star's own neighbourhood: beyond 4 sigma its glow is below 1/2000 of its peak.
        reach = 4 * math.sqrt(s2)
        x0, x1 = max(0, int((sx[i] - reach) * size)), min(size, int((sx[i] + reach) * size) + 1)
        y0, y1 = max(0, int((sy[i] - reach) * size)), min(size, int((sy[i] + reach) * size) + 1)
        if x0 >= x1 or y0 >= y1:
            continue
        px, py = xx[y0:y1, x0:x1], yy[y0:y1, x0:x1]
        blob = torch.exp(-((px - sx[i]) ** 2 + (py - sy[i]) ** 2) / float(2 * s2))
        glow[y0:y1, x0:x1] += float(amp) * blob
    return img + glow.clamp(max=0.5) * torch.tensor([0.9, 0.92, 1.0]).view(3, 1, 1)


def _clouds(rng, xx, yy, t, base: torch.Tensor) -> torch.Tensor:
    field = _waves(rng, 8, 1.5, 4.0, 0.08)
    amount = ((field(xx, yy * 1.8, t) - 0.1) * 2.5).clamp(0.0, 1.0) * 0.55
    return base + (torch.tensor([0.72, 0.78, 0.88]).view(3, 1, 1) - base) * amount


def _blue_sky(rng, xx, yy, t, size):
    return _clouds(rng, xx, yy, t, _lerp((0.20, 0.40, 0.78), (0.48, 0.64, 0.86), yy))


def _sunset(rng, xx, yy, t, size):
    top = _lerp((0.20, 0.10, 0.26), (0.50, 0.25, 0.32), (yy / 0.5).clamp(max=1.0))
    low = _lerp((0.50, 0.25, 0.32), (0.72, 0.42, 0.28), ((yy - 0.5) / 0.35).clamp(0, 1))
    img = torch.where(yy < 0.5, top, low)
    haze = _waves(rng, 5, 2.0, 6.0, 0.06)
    img = img + 0.035 * haze(xx * 0.3, yy * 3.0, t)
    hills = _waves(rng, 4, 1.0, 3.0, 0.0)
    ridge = 0.84 + 0.04 * hills(xx, torch.zeros_like(xx), 0.0)
    w = (0.5 - (ridge - yy) * size).clamp(0.0, 1.0)  # anti-aliased silhouette edge
    return img + (torch.tensor([0.12, 0.07, 0.12]).view(3, 1, 1) - img) * w


def _meadow(rng, xx, yy, t, size):
    sky = _clouds(rng, xx, yy, t, _lerp((0.30, 0.50, 0.80), (0.50, 0.64, 0.84), yy / 0.45))
    horizon = 0.42 + 0.04 * _waves(rng, 3, 0.5, 2.0, 0.0)(xx, torch.zeros_like(xx), 0.0)
    depth = ((yy - horizon) / (1 - horizon)).clamp(0, 1)
    grass = _lerp((0.22, 0.40, 0.15), (0.12, 0.26, 0.08), depth)
    blades = _waves(rng, 6, 20.0, 40.0, 0.0)
    sway = 0.01 * math.sin(2 * math.pi * 0.6 * t)
    grass = grass + 0.03 * blades(xx + sway * (1 - depth), yy * 0.25, 0.0)
    w = (0.5 - (horizon - yy) * size).clamp(0.0, 1.0)
    return sky + (grass - sky) * w


_BACKGROUNDS = {"night sky": _night_sky, "blue sky": _blue_sky, "sunset": _sunset, "meadow": _meadow}


def render_background(background: str, seed: int, size: int, t: float = 0.0) -> torch.Tensor:
    """The background alone, (3, size, size) in [0, 1], at time t."""
    if background not in _BACKGROUNDS:
        raise ValueError(f"unknown background {background!r}; expected one of {vocab.BACKGROUNDS}")
    xx, yy = _grid(size)
    rng = np.random.default_rng(seed)  # same draws every frame: the texture only moves with t
    return _BACKGROUNDS[background](rng, xx, yy, t, size).clamp(0.0, 1.0)


# ---------------------------------------------------------------- frames
def frame_times(fps: float, frames: int) -> list[float]:
    """Times of frames 0..frames-1 at `fps`; i / fps is correctly rounded, so equal
    instants at different frame rates are equal floats."""
    return [i / fps for i in range(frames)]


def _check_size(size: int) -> None:
    if not isinstance(size, int) or size < 8:
        raise ValueError(f"size must be an integer of at least 8 pixels, got {size!r}")


def render_frames(scene: Scene, size: int, times: Sequence[float]) -> torch.Tensor:
    """Frames of `scene` at `times` (seconds): (3, F, size, size) float32 in [0, 1]."""
    _check_size(size)
    xx, yy = _grid(size)
    out = torch.empty(3, len(times), size, size)
    for i, t in enumerate(times):
        img = render_background(scene.background, scene.background_seed, size, t)
        for obj in scene.objects:
            alpha = _object_state_coverage(obj, t, xx, yy, size)
            colour = torch.tensor(vocab.COLOURS[obj.colour]).view(3, 1, 1)
            img = img + (colour - img) * alpha
        out[:, i] = img
    return out


def render_clip(scene: Scene, size: int = 128, fps: float = 24, frames: int = 46) -> torch.Tensor:
    """A clip (3, frames, size, size) in [0, 1], frame i at time i / fps."""
    return render_frames(scene, size, frame_times(fps, frames))


def render_masks(scene: Scene, size: int, times: Sequence[float]) -> torch.Tensor:
    """Ground-truth visible coverage of each object: (n_objects, F, size, size) in [0, 1]."""
    _check_size(size)
    xx, yy = _grid(size)
    out = torch.zeros(len(scene.objects), len(times), size, size)
    for i, t in enumerate(times):
        for k, obj in enumerate(scene.objects):
            alpha = _object_state_coverage(obj, t, xx, yy, size)
            out[:k, i] *= 1 - alpha  # later objects are drawn on top
            out[k, i] = alpha
    return out
