"""Natural footage for training and measuring an interpolator: photographs under camera-like
motion (pan, zoom, rotation, and an object crossing them), every frame rendered from one
continuous motion at its own instant, so the frames between two keyframes are exact.

The photographs are a folder of the user's own, or `scikit-image`: the photos that ship inside
its wheel, less the three (`HELD_OUT`) that the interpolation benchmark measures on.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

HELD_OUT = ("astronaut.png", "coffee.png", "chelsea.png")  # the benchmark's: never trained on
# scikit-image's other photographs and textures (greyscale ones are read as RGB); not the
# drawings, charts or scans of text, whose flat areas teach nothing about motion
SCIKIT_IMAGE_TRAIN = ("rocket.jpg", "motorcycle_left.png", "motorcycle_right.png", "hubble_deep_field.jpg",
                      "ihc.png", "retina.jpg", "brick.png", "grass.png", "gravel.png", "camera.png", "coins.png",
                      "moon.png")
SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def has_scikit_image() -> bool:
    return importlib.util.find_spec("skimage") is not None


def scikit_image_folder() -> Path:
    spec = importlib.util.find_spec("skimage")
    if spec is None:
        raise FileNotFoundError("photos: scikit-image needs scikit-image installed (pip install scikit-image)")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def photo_files(photos: str) -> list[Path]:
    """The photographs `photos` names: "scikit-image", or a folder of images (checked here, so a
    wrong path fails before any work)."""
    if photos == "scikit-image":
        return [scikit_image_folder() / name for name in SCIKIT_IMAGE_TRAIN]
    folder = Path(photos)
    if not folder.is_dir():
        raise FileNotFoundError(f"photos: no folder {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES)
    if not files:
        raise FileNotFoundError(f"photos: {folder} holds no {', '.join(SUFFIXES)} images")
    return files


def load_photo(path: str | Path, side: int) -> torch.Tensor:
    """A photograph, centre-cropped square and resized to side x side: (3, side, side) in [0, 1]."""
    img = Image.open(path).convert("RGB")
    w, h = img.size
    c = min(w, h)
    img = img.crop(((w - c) // 2, (h - c) // 2, (w - c) // 2 + c, (h - c) // 2 + c)).resize((side, side), Image.LANCZOS)
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255


def camera_view(img: torch.Tensor, zoom: float, angle: float, shift: tuple[float, float], size: int,
                over: int = 4) -> torch.Tensor:
    """img seen by a camera zoomed in `zoom` times, turned `angle` degrees and moved `shift` (in
    half-frames), (3, size, size). Rendered at `over` times `size` (give img that resolution) and
    area-pooled: sampled any coarser, its detail aliases differently at each sub-pixel position,
    and the in-between frames are no longer the motion's (measured: every interpolator fell under
    blending on a plain sub-pixel pan rendered at twice the size)."""
    a = np.deg2rad(angle)
    theta = torch.tensor([[np.cos(a) / zoom, -np.sin(a) / zoom, shift[0]],
                          [np.sin(a) / zoom, np.cos(a) / zoom, shift[1]]], dtype=torch.float32)[None]
    grid = F.affine_grid(theta, (1, 3, over * size, over * size), align_corners=False)
    out = F.grid_sample(img[None], grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return F.avg_pool2d(out, over)[0]


def disc_layer(img: torch.Tensor) -> torch.Tensor:
    """A round cut-out of img with its coverage as a fourth channel: (4, S, S), for `over_layer`."""
    side = img.shape[-1]
    yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    disc = ((yy - (side - 1) / 2) ** 2 + (xx - (side - 1) / 2) ** 2 <= (side / 2 - 1) ** 2).float()[None]
    return torch.cat((img * disc, disc))


def over_layer(background: torch.Tensor, layer: torch.Tensor, x: float, y: float, over: int = 4) -> torch.Tensor:
    """background (3, B, B) with layer (4, S, S; `disc_layer`) laid over it, its top-left corner
    at the sub-pixel (x, y), then area-pooled by `over`: an object crossing a scene, with
    occlusions at its edges."""
    big, side = background.shape[-1], layer.shape[-1]
    theta = torch.tensor([[big / side, 0, (big - side - 2 * x) / side],
                          [0, big / side, (big - side - 2 * y) / side]], dtype=torch.float32)[None]
    grid = F.affine_grid(theta, (1, 4, big, big), align_corners=False)
    placed = F.grid_sample(layer[None], grid, align_corners=False)[0]
    frame = background * (1 - placed[3:]) + placed[:3]
    return F.avg_pool2d(frame[None], over)[0]


def random_gap(photos: list[torch.Tensor], rng: np.random.Generator, size: int, taus: list[float],
               over: int = 4, reach: float = 8.0) -> torch.Tensor:
    """The frames at instants `taus` (0 and 1 are the keyframes) of one keyframe gap of random
    camera motion over one of `photos` (each (3, over * size, over * size)): a pan of up to
    `reach` px, a zoom of up to 12%, a turn of up to 5 degrees, and, one time in three, a disc cut
    from another photo crossing it by up to `reach` px. (len(taus), 3, size, size)."""
    img = photos[int(rng.integers(len(photos)))]
    zoom0 = rng.uniform(1.2, 2.0)
    zoom1 = zoom0 * rng.uniform(0.88, 1.12)
    angle0 = rng.uniform(-30, 30)
    angle1 = angle0 + rng.uniform(-5, 5)
    room = 1 - 1 / min(zoom0, zoom1)  # how far the view may move and stay inside the photo
    shift0 = rng.uniform(-room, room, 2) * 0.8
    step = reach / (size / 2)  # pixels at this size, in half-frames
    shift1 = shift0 + rng.uniform(-step, step, 2)
    moving = rng.random() < 1 / 3
    if moving:
        side = over * size // int(rng.integers(3, 6))
        layer = disc_layer(F.interpolate(photos[int(rng.integers(len(photos)))][None], size=(side, side),
                                         mode="area")[0])
        big = over * size
        xy0 = rng.uniform(0, big - side, 2)
        xy1 = xy0 + rng.uniform(-reach, reach, 2) * over
    frames = []
    for tau in taus:  # every parameter moves linearly through the gap
        zoom, angle = (1 - tau) * zoom0 + tau * zoom1, (1 - tau) * angle0 + tau * angle1
        shift = (1 - tau) * shift0 + tau * shift1
        if not moving:
            frames.append(camera_view(img, zoom, angle, (shift[0], shift[1]), size, over))
            continue
        view = camera_view(img, zoom, angle, (shift[0], shift[1]), over * size, 1)
        x, y = (1 - tau) * xy0 + tau * xy1
        frames.append(over_layer(view, layer, float(x), float(y), over))
    return torch.stack(frames).clamp(0, 1)


def held_out_motions(frames: int = 46, size: int = 128, over: int = 4) -> dict[str, torch.Tensor]:
    """The benchmark's natural footage, on the `HELD_OUT` photos: {kind: (3, frames, size, size)}
    for a pan, a zoom, a rotation, a pan and zoom, and a disc of one photo crossing another. A
    keyframe gap (3 frames at 24 fps) moves the picture 3-6 px at its edges, as a brisk pan does
    at this size; each view stays inside its photo, so no mirrored border moves against the motion."""
    folder = scikit_image_folder()
    tau = [i / (frames - 1) for i in range(frames)]
    astronaut, coffee, chelsea = (load_photo(folder / name, over * size) for name in HELD_OUT)
    videos = {
        "pan": [camera_view(astronaut, 1.5, 0, (0.6 * t - 0.3, 0.3 * t), size, over) for t in tau],
        "zoom": [camera_view(coffee, 1 + t, 0, (0, 0), size, over) for t in tau],
        "rotation": [camera_view(chelsea, 1.5, 45 * t, (0, 0), size, over) for t in tau],
        "pan and zoom": [camera_view(astronaut, 1.5 + 0.5 * t, 0, (0.4 * t - 0.2, -0.2 * t), size, over)
                         for t in tau],
    }
    big = over * size
    layer = disc_layer(load_photo(folder / "chelsea.png", big // 4))  # a quarter of the frame wide
    videos["moving object"] = [over_layer(coffee, layer, big * (0.08 + 0.5 * t), big * (0.6 - 0.3 * t), over)
                               for t in tau]
    return {k: torch.stack(v, 1).clamp(0, 1) for k, v in videos.items()}
