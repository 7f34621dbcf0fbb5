"""Torch datasets of the synthetic world, rendered on the fly.

Item i of a dataset is a pure function of (seed, split, i), so datasets need no files,
shard across DataLoader workers for free, and two runs see the same data.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch.utils.data import Dataset

from magicvideo.world.captions import make_caption
from magicvideo.world.render import frame_times, render_frames
from magicvideo.world.scene import KEYFRAME_FPS, SPLITS, Scene, clip_rng, sample_scene

CLIP_PARTS = ("reference", "keyframes", "keyframes_hr", "frames")


@dataclass(frozen=True)
class WorldClip:
    """One clip of the world: its scene and its caption."""

    index: int
    scene: Scene
    caption: str


def draw_clip(seed: int, split: str, index: int) -> WorldClip:
    """Clip `index` of (seed, split): the scene first, then its caption, from one generator."""
    rng = clip_rng(seed, split, index)
    scene = sample_scene(rng, split)
    return WorldClip(index, scene, make_caption(scene, rng, split))


class _WorldDataset(Dataset):
    def __init__(self, split: str = "train", seed: int = 0, length: int = 100_000) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        if length < 1:
            raise ValueError(f"length must be positive, got {length}")
        self.split, self.seed, self.length = split, seed, length

    def __len__(self) -> int:
        return self.length

    def clip(self, index: int) -> WorldClip:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for a dataset of {self.length}")
        return draw_clip(self.seed, self.split, index)


class WorldImages(_WorldDataset):
    """Reference images with captions: the first frame of each clip.

    Item: {"image": (3, size, size) in [0, 1], "caption": str, "index": int}.
    """

    def __init__(self, split: str = "train", seed: int = 0, size: int = 128, length: int = 100_000) -> None:
        super().__init__(split, seed, length)
        self.size = size

    def __getitem__(self, index: int) -> dict:
        clip = self.clip(index)
        image = render_frames(clip.scene, self.size, [0.0])[:, 0]
        return {"image": image, "caption": clip.caption, "index": index}


class WorldClips(_WorldDataset):
    """Clips as every stage trains on them (the defaults are the `tiny` preset's sizes).

    Item, each entry present when named in `parts`:
    - "reference":    (3, high_size, high_size), the first frame (what T2I makes)
    - "keyframes":    (3, K, low_size, low_size), K keyframes at 8 fps (I2V's output)
    - "keyframes_hr": (3, K, high_size, high_size), the same instants (V2V's target)
    - "frames":       (3, (K - 1) * times + 1, high_size, high_size) at 8 * times fps,
                      keyframes included at every `times`-th frame (VFI's target)
    plus "caption" and "index". All float32 in [0, 1].
    """

    def __init__(
        self,
        split: str = "train",
        seed: int = 0,
        length: int = 100_000,
        keyframes: int = 16,
        low_size: int = 64,
        high_size: int = 128,
        times: int = 3,
        parts: tuple[str, ...] = CLIP_PARTS,
    ) -> None:
        super().__init__(split, seed, length)
        unknown = set(parts) - set(CLIP_PARTS)
        if unknown:
            raise ValueError(f"unknown clip parts {sorted(unknown)}; expected some of {CLIP_PARTS}")
        if keyframes < 1 or times < 1:
            raise ValueError("keyframes and times must be positive")
        self.keyframes, self.low_size, self.high_size, self.times = keyframes, low_size, high_size, times
        self.parts = tuple(parts)

    def __getitem__(self, index: int) -> dict:
        clip = self.clip(index)
        item: dict = {"caption": clip.caption, "index": index}
        k, times = self.keyframes, self.times
        if "frames" in self.parts:
            full = render_frames(clip.scene, self.high_size, frame_times(KEYFRAME_FPS * times, (k - 1) * times + 1))
            item["frames"] = full
            hires = full[:, ::times]  # exact: the same instants, bit for bit
        elif {"keyframes_hr", "reference"} & set(self.parts):
            wanted = k if "keyframes_hr" in self.parts else 1
            hires = render_frames(clip.scene, self.high_size, frame_times(KEYFRAME_FPS, wanted))
        if "keyframes_hr" in self.parts:
            item["keyframes_hr"] = hires.contiguous()
        if "reference" in self.parts:
            item["reference"] = hires[:, 0].clone()
        if "keyframes" in self.parts:
            item["keyframes"] = render_frames(clip.scene, self.low_size, frame_times(KEYFRAME_FPS, k))
        return item
