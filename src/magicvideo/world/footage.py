"""Real footage as training data: a user's folder of videos with a captions CSV.

`VideoFolderClips` yields the same items as `magicvideo.world.WorldClips`, so every
trainer runs on it unchanged. The CSV has a header with at least the columns `file`
(a path relative to the folder) and `caption`:

    file,caption
    clips/dog.mp4,"a dog runs across a lawn, slow motion"
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from magicvideo.media import read_video
from magicvideo.world.datasets import CLIP_PARTS
from magicvideo.world.scene import KEYFRAME_FPS


def square_resize(video: torch.Tensor, size: int) -> torch.Tensor:
    """Centre-crop (3, F, H, W) to a square and resize it to size x size (antialiased)."""
    _, _, h, w = video.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = video[:, :, top : top + side, left : left + side].transpose(0, 1)  # (F, 3, s, s)
    out = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out.clamp(0, 1).transpose(0, 1).contiguous()


class VideoFolderClips(Dataset):
    """Clips from a folder of videos listed in a captions CSV (see module docstring).

    Frames are taken at the keyframe instants k / 8 s and the in-between instants from the
    start of each video (nearest source frame); a video shorter than the clip repeats its
    last frame. `fps` overrides a file's own frame rate (needed if a file has none).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        captions: str | os.PathLike = "captions.csv",
        keyframes: int = 16,
        low_size: int = 64,
        high_size: int = 128,
        times: int = 3,
        parts: tuple[str, ...] = CLIP_PARTS,
        fps: float | None = None,
    ) -> None:
        self.root = Path(root)
        csv_path = Path(captions) if Path(captions).is_absolute() else self.root / captions
        if not csv_path.is_file():
            raise FileNotFoundError(f"captions file not found: {csv_path}")
        with open(csv_path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = {"file", "caption"} - set(reader.fieldnames or ())
            if missing:
                raise ValueError(f"{csv_path} lacks the column(s) {sorted(missing)}; it needs 'file' and 'caption'")
            rows = [(r["file"], r["caption"]) for r in reader]
        if not rows:
            raise ValueError(f"{csv_path} lists no videos")
        absent = [name for name, _ in rows if not (self.root / name).is_file()]
        if absent:
            raise FileNotFoundError(f"{len(absent)} video(s) in {csv_path} not found, first: {self.root / absent[0]}")
        unknown = set(parts) - set(CLIP_PARTS)
        if unknown:
            raise ValueError(f"unknown clip parts {sorted(unknown)}; expected some of {CLIP_PARTS}")
        self.rows = rows
        self.keyframes, self.low_size, self.high_size, self.times = keyframes, low_size, high_size, times
        self.parts, self.fps = tuple(parts), fps

    def __len__(self) -> int:
        return len(self.rows)

    def _at(self, video: torch.Tensor, fps: float, rate: float, count: int) -> torch.Tensor:
        idx = [min(round(i / rate * fps), video.shape[1] - 1) for i in range(count)]
        return video[:, idx]

    def __getitem__(self, index: int) -> dict:
        name, caption = self.rows[index]
        video, file_fps = read_video(self.root / name)
        fps = self.fps or file_fps
        if not fps:
            raise ValueError(f"{name} has no frame rate; pass fps= to VideoFolderClips")
        k, times = self.keyframes, self.times
        item: dict = {"caption": caption, "index": index}
        if "frames" in self.parts:
            item["frames"] = square_resize(self._at(video, fps, KEYFRAME_FPS * times, (k - 1) * times + 1),
                                           self.high_size)
        keys = self._at(video, fps, KEYFRAME_FPS, k)
        if "keyframes_hr" in self.parts or "reference" in self.parts:
            hires = square_resize(keys, self.high_size)
            if "keyframes_hr" in self.parts:
                item["keyframes_hr"] = hires
            if "reference" in self.parts:
                item["reference"] = hires[:, 0].clone()
        if "keyframes" in self.parts:
            item["keyframes"] = square_resize(keys, self.low_size)
        return item
