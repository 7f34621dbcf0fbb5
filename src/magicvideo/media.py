"""Reading and writing frames: mp4 (through the ffmpeg binary that imageio-ffmpeg ships),
images, folders of images. Tensors are (3, F, H, W) / (3, H, W) float32 in [0, 1].

Two mp4 flavours (see docs/video_files.md):
- "measure" (default): H.264 yuv444p, CRF 4. Full chroma, so small frames keep their
  colours; what the judge and the metrics read.
- "web": H.264 yuv420p, CRF 18, faststart. Plays in every common player and browser.
Every file is written to a temporary name and renamed, so a crash never leaves a
half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from magicvideo.errors import MediaError

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".gif")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
FLAVOURS = {
    "measure": {"pix_fmt": "yuv444p", "crf": 4},
    "web": {"pix_fmt": "yuv420p", "crf": 18},
}


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same suffix); rename it onto `path` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".partial{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes files private; give them the usual mode
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """(3, F, H, W) in [0, 1] -> (F, H, W, 3) uint8, rounded."""
    return (frames.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 3, 0).cpu().numpy()


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold a Ctrl-C until the block ends, then raise it: a video being encoded is finished and
    renamed first. Why: ffmpeg's writer tears down in finalizers, where an interrupt is swallowed
    (the run exited 0 with a traceback printed, once Ctrl-C landed as the last video was written)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


# what each container is encoded with: (video codec, audio codec for the input's sound)
CONTAINERS = {".mp4": ("libx264", "aac"), ".mov": ("libx264", "aac"), ".mkv": ("libx264", "aac"),
              ".webm": ("libvpx-vp9", "libopus")}


@dataclass
class VideoInfo:
    fps: float
    width: int
    height: int
    audio: bool  # the file has a sound track
    frames: int | None  # from the container's duration (an estimate; None when it gives none)


def check_output(path: str | os.PathLike, width: int, height: int, flavour: str) -> None:
    """What an output path and flavour can hold, checked before any work: a video container
    (CONTAINERS), a .gif, or a folder (a path ending in / or with no suffix) of numbered PNGs."""
    if flavour not in FLAVOURS:
        raise ValueError(f"unknown video flavour {flavour!r}; expected one of {tuple(FLAVOURS)}")
    suffix, parent = Path(path).suffix.lower(), Path(path).parent
    if parent.exists() and not parent.is_dir():
        raise MediaError(f"cannot write {path}: {parent} is a file, not a folder")
    if not suffix and Path(path).is_file():
        raise MediaError(f"cannot write PNG frames into {path}: it is a file")
    if suffix and suffix != ".gif" and suffix not in CONTAINERS:
        raise MediaError(f"cannot write {suffix} video: give {', '.join(CONTAINERS)}, .gif, or a folder for PNGs")
    if suffix in CONTAINERS and FLAVOURS[flavour]["pix_fmt"] == "yuv420p" and (height % 2 or width % 2):
        raise ValueError(f"yuv420p (--flavour web) needs even frame sides, got {width}x{height}; use --flavour measure")


@contextlib.contextmanager
def video_writer(path: str | os.PathLike, fps: float, width: int, height: int, flavour: str = "measure",
                 audio_from: str | os.PathLike | None = None) -> Iterator[Callable[[torch.Tensor], None]]:
    """Yield `write(frame)` for (3, H, W) frames in [0, 1], encoded as they come (memory does not
    grow with length). The container follows the suffix (check_output); `audio_from`: a file whose
    sound track goes into the video. Finished files are renamed into place; an exception or a kill
    leaves none. H.264 files are a function of their frames (one thread, no timestamps)."""
    check_output(path, width, height, flavour)
    path = Path(path)
    suffix = path.suffix.lower()
    if not suffix:  # a folder of PNGs: each frame is a finished file
        path.mkdir(parents=True, exist_ok=True)
        count = itertools.count()
        yield lambda frame: write_image(path / f"frame_{next(count):06d}.png", frame)
        return
    if suffix == ".gif":  # Pillow needs every frame at once
        frames: list[torch.Tensor] = []
        yield frames.append
        _write_gif(path, to_uint8(torch.stack(frames, 1)), fps)
        return
    codec, audio_codec = CONTAINERS[suffix]
    pix_fmt, crf = FLAVOURS[flavour]["pix_fmt"], FLAVOURS[flavour]["crf"]
    if codec == "libx264":
        params = ["-crf", str(crf), "-preset", "medium", "-movflags", "+faststart"]
        params += ["-threads", "1", "-fflags", "+bitexact", "-flags:v", "+bitexact", "-map_metadata", "-1"]
    else:  # VP9 in constant-quality mode (its CRF scale is not x264's)
        params = ["-crf", str(crf + 15), "-b:v", "0", "-row-mt", "1", "-map_metadata", "-1"]
    with interrupts_deferred(), atomic_path(path) as tmp:
        import imageio_ffmpeg  # here, not at the top: the models run without ffmpeg installed

        writer = imageio_ffmpeg.write_frames(
            str(tmp), (width, height), fps=fps, codec=codec, pix_fmt_in="rgb24", pix_fmt_out=pix_fmt,
            quality=None, output_params=params, macro_block_size=1, ffmpeg_log_level="error",
            audio_path=str(audio_from) if audio_from is not None else None,
            audio_codec=audio_codec if audio_from is not None else None,
        )
        writer.send(None)
        try:
            yield lambda frame: writer.send(np.ascontiguousarray(to_uint8(frame.unsqueeze(1))[0]))
        finally:
            writer.close()  # ffmpeg finishes the file (renamed into place) or is stopped (it is deleted)


def write_video(
    path: str | os.PathLike, frames: torch.Tensor, fps: float, flavour: str = "measure"
) -> Path:
    """Write (3, F, H, W) frames in [0, 1] as a video of the given flavour (the container follows
    the suffix: check_output), or as an animated GIF when `path` ends in .gif."""
    if frames.ndim != 4 or frames.shape[0] != 3:
        raise ValueError(f"expected frames (3, F, H, W), got {tuple(frames.shape)}")
    with video_writer(path, fps, frames.shape[-1], frames.shape[-2], flavour) as write:
        for frame in frames.unbind(1):
            write(frame)
    return Path(path)


def _write_gif(path: str | os.PathLike, data: np.ndarray, fps: float) -> Path:
    """An animated GIF that loops (Pillow; a 256-colour palette per frame, so not for measuring)."""
    images = [Image.fromarray(frame) for frame in data]
    with atomic_path(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
    return Path(path)


def _unreadable(path: Path, err: BaseException) -> MediaError:
    return MediaError(f"cannot read {path} as a video: {str(err).splitlines()[0] if str(err) else err}")


def open_video(path: str | os.PathLike) -> tuple[VideoInfo, Iterator[torch.Tensor]]:
    """A video file's facts and its frames, decoded one at a time ((3, H, W) float32 in [0, 1]),
    so a long video costs the memory of a frame. A file that is not a video fails here."""
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"no such video file: {path}")
    try:
        import imageio_ffmpeg  # here, not at the top: the models run without ffmpeg installed

        reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
        meta = next(reader)
    except (RuntimeError, OSError, StopIteration) as err:
        raise _unreadable(path, err) from None
    w, h = meta["size"]
    fps = float(meta.get("fps") or 0.0)
    duration = meta.get("duration")
    info = VideoInfo(fps, w, h, bool(meta.get("audio_codec")),
                     round(duration * fps) if duration and fps else None)

    def frames() -> Iterator[torch.Tensor]:
        try:
            for buf in reader:
                yield torch.from_numpy(np.frombuffer(buf, np.uint8).reshape(h, w, 3).copy()).permute(2, 0, 1) / 255.0
        except (RuntimeError, OSError) as err:
            raise _unreadable(path, err) from None
        finally:
            reader.close()

    return info, frames()


def read_video(path: str | os.PathLike) -> tuple[torch.Tensor, float]:
    """Read a whole video file: ((3, F, H, W) float32 in [0, 1], fps)."""
    info, frames = open_video(path)
    video = list(frames)
    if not video:
        raise MediaError(f"{path} holds no frames")
    return torch.stack(video, 1), info.fps


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """Read an image file as (3, H, W) float32 in [0, 1] (alpha dropped)."""
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"no such image file: {path}")
    try:
        with Image.open(path) as img:
            if img.mode.startswith("I;16") or img.mode in ("I", "F"):
                # Pillow's convert("RGB") clips 16-bit and float greys to white: scale them ourselves
                grey = np.asarray(img, dtype=np.float64)
                top = {"F": 1.0, "I": 65535.0 if grey.max() > 255 else 255.0}.get(img.mode, 65535.0)
                return torch.from_numpy(np.clip(grey / top, 0, 1)).float().expand(3, -1, -1).clone()
            array = np.asarray(img.convert("RGB"))
    except (OSError, Image.DecompressionBombError) as err:
        raise MediaError(f"cannot read {path} as an image: {err}") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255.0


FITS = ("crop", "pad", "stretch")  # how an image takes the frames' shape: fit_shape


def check_fit(fit: str) -> None:
    if fit not in FITS:
        raise ValueError(f"fit must be one of {', '.join(FITS)}, got {fit!r}")


def fit_shape(image: torch.Tensor, height: int, width: int, fit: str = "crop") -> torch.Tensor:
    """A (3, H, W) image given the aspect of a height x width frame, at its own resolution (the
    stage resizes it): `crop` keeps its centre part of that aspect, `pad` letterboxes it on black,
    `stretch` leaves it to be resized out of shape. An image of that aspect comes back as it is."""
    check_fit(fit)
    h, w = image.shape[-2:]
    if h * width == w * height or fit == "stretch":
        return image
    wide = w * height > h * width  # wider than the frame: crop its sides, or pad above and below
    if fit == "crop":
        ch, cw = (h, round(h * width / height)) if wide else (round(w * height / width), w)
        top, left = (h - ch) // 2, (w - cw) // 2
        return image[..., top : top + ch, left : left + cw].clone()
    ph, pw = (round(w * height / width), w) if wide else (h, round(h * width / height))
    out = image.new_zeros((*image.shape[:-2], ph, pw))
    top, left = (ph - h) // 2, (pw - w) // 2
    out[..., top : top + h, left : left + w] = image
    return out


def write_image(path: str | os.PathLike, image: torch.Tensor) -> Path:
    """Write a (3, H, W) image in [0, 1] (png, or whatever the suffix says)."""
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected an image (3, H, W), got {tuple(image.shape)}")
    with atomic_path(path) as tmp:
        Image.fromarray(to_uint8(image.unsqueeze(1))[0]).save(tmp, format=Image.registered_extensions().get(
            Path(path).suffix.lower(), "PNG"))
    return Path(path)


def load_frames(path: str | os.PathLike) -> tuple[torch.Tensor, float | None]:
    """Frames from a video file, an image (one frame) or a folder of images (sorted by name).

    Returns ((3, F, H, W) float32 in [0, 1], fps or None when the source has none).
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise MediaError(f"{path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        images = [read_image(p) for p in files]
        if len({tuple(im.shape) for im in images}) > 1:
            raise MediaError(f"the images in {path} do not all have the same size")
        return torch.stack(images, 1), None
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return read_image(path).unsqueeze(1), None
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return read_video(path)
    if not path.exists():
        raise MediaError(f"no such file or folder: {path}")
    raise MediaError(f"{path} is not a video ({', '.join(VIDEO_SUFFIXES)}), an image or a folder of images")
