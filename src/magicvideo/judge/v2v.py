"""Measure stage 3 on held-out clips (stage 3's bar): fidelity to the true 128x128 keyframes
(PSNR, SSIM), the judge's reading of the upscaled clip, flicker and sharpness."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from tqdm import tqdm

from magicvideo.judge.files import expected_from_scene
from magicvideo.judge.judge import aggregate, read_clip, score_clip
from magicvideo.judge.metrics import psnr, ssim
from magicvideo.world import WorldClip, draw_clip, render_frames
from magicvideo.world.render import frame_times
from magicvideo.world.scene import KEYFRAME_FPS

# (clips, low-res frames (B, 3, F, h, w), references (B, 3, 128, 128)) -> (B, 3, F, H, W)
Upscaler = Callable[[list[WorldClip], torch.Tensor, torch.Tensor], torch.Tensor]


def bicubic(size: int = 128) -> Upscaler:
    from magicvideo.stages.v2v import upsample

    return lambda clips, low, refs: upsample(low, size)


def true_keyframes(size: int, frames: int = 16) -> Callable[[list[WorldClip], torch.Tensor], torch.Tensor]:
    """The inputs a stage is measured on by default: the clips' true keyframes at `size`."""
    return lambda clips, refs: torch.stack([render_frames(c.scene, size, frame_times(KEYFRAME_FPS, frames))
                                            for c in clips])


def sharpness(video: torch.Tensor) -> float:
    """Mean absolute Laplacian of the luma, (3, F, H, W) in [0, 1], x100: edges that are crisp
    score higher; a blurred copy of the same frames scores lower."""
    luma = (0.299 * video[0] + 0.587 * video[1] + 0.114 * video[2]).unsqueeze(1)  # (F, 1, H, W)
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)
    return float(F.conv2d(luma.float(), kernel).abs().mean() * 100)


def evaluate_v2v(upscale: Upscaler, count: int = 100, seed: int = 4242, batch: int = 4, low_size: int = 64,
                 frames: int = 16, inputs: Callable | None = None, progress: bool = True) -> dict:
    """`upscale` on `count` held-out clips of `seed`. Inputs: the true `low_size` keyframes, or
    `inputs(clips, refs)` (for example a stage-2 run); fidelity is measured against the true
    keyframes at the output's size, so it means something only for true inputs. The reference is the true first
    frame at 128x128."""
    inputs = inputs or true_keyframes(low_size, frames)
    clips = [draw_clip(seed, "heldout", i) for i in range(count)]
    scores, readings, fidelity, sharp = [], [], [], []
    seconds = 0.0
    for start in tqdm(range(0, count, batch), desc="v2v on held-out clips", disable=not progress):
        chunk = clips[start : start + batch]
        refs = torch.stack([render_frames(c.scene, 128, [0.0])[:, 0] for c in chunk])
        low = inputs(chunk, refs)
        began = time.perf_counter()
        videos = upscale(chunk, low, refs)
        seconds += time.perf_counter() - began
        for clip, video in zip(chunk, videos):
            truth = render_frames(clip.scene, video.shape[-1], frame_times(KEYFRAME_FPS, video.shape[1]))
            reading = read_clip(video)
            scores.append(score_clip(reading, expected_from_scene(clip.scene)))
            readings.append(reading)
            pairs = video.transpose(0, 1), truth.transpose(0, 1)
            fidelity.append((psnr(*pairs), ssim(*pairs)))
            sharp.append(sharpness(video))
    report = aggregate(scores, readings)
    report.update({
        "psnr": sum(p for p, _ in fidelity) / count,
        "ssim": sum(s for _, s in fidelity) / count,
        "sharpness": sum(sharp) / count,
        "seconds_per_clip": seconds / count,
        "scores": scores,  # per clip, in order (for paired comparisons)
    })
    return report
