"""Measure stage 2 with the judge: held-out clips, the ground-truth first frame as the reference
image, 16 generated keyframes read back and scored (stage 2's quality bar)."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from magicvideo.judge.files import expected_from_scene
from magicvideo.judge.judge import Expected, aggregate, read_clip, score_clip
from magicvideo.judge.metrics import psnr
from magicvideo.judge.prompt import with_motion
from magicvideo.world import WorldClip, draw_clip, render_frames
from magicvideo.world.render import frame_times
from magicvideo.world.scene import KEYFRAME_FPS


def _frame_scores(video: torch.Tensor, expected: Expected) -> tuple[int, int, int]:
    """(objects expected, shapes right, colours right) summed over the frames of one clip."""
    still = Expected([(s, c, None) for s, c, _ in expected.objects], None)
    totals = np.zeros(3, int)
    for f in range(video.shape[1]):
        score = score_clip(read_clip(video[:, f]), still)
        totals += (score["objects_expected"], score["shape"], score["colour"])
    return tuple(int(v) for v in totals)


def ground_truth(size: int, frames: int, vae=None) -> Callable[[list[WorldClip], torch.Tensor], torch.Tensor]:
    """A stand-in for a stage that returns the clips' true keyframes (the judge's ceiling), or
    their round trips through `vae` (the ceiling of any model that decodes through it)."""
    def generate(clips: list[WorldClip], refs: torch.Tensor) -> torch.Tensor:
        videos = torch.stack([render_frames(c.scene, size, frame_times(KEYFRAME_FPS, frames)) for c in clips])
        if vae is None:
            return videos
        from magicvideo.training.vae import reconstruct

        flat = reconstruct(vae, videos.transpose(1, 2).flatten(0, 1))
        return flat.reshape(len(clips), frames, 3, size, size).transpose(1, 2)
    return generate


def evaluate_i2v(stage, count: int = 200, seed: int = 4242, batch: int = 4, ref_size: int = 128,
                 progress: bool = True, generate: Callable | None = None, size: int | None = None,
                 **call) -> dict:
    """Judge accuracy (motion included), per-frame shape/colour, first-frame PSNR against the
    reference and flicker against the ground truth's, on `count` held-out clips of `seed`.
    `call` goes to the stage (steps, guidance, noise_prior, appearance_scale, ...).
    `generate(clips, refs)` replaces the stage (then `stage` may be None and `size` is given).
    The report's `per_clip` holds each clip's counts and readings, for paired intervals."""
    size = size or stage.settings.size
    frames = call.get("frames") or (stage.settings.frames if stage is not None else 16)
    if generate is None:
        def generate(chunk: list[WorldClip], refs: torch.Tensor) -> torch.Tensor:
            captions = [c.caption for c in chunk]
            still = [with_motion(c) for c in captions]  # what motion guidance contrasts, when it is on
            return stage(captions, refs, seed=0, still_prompt=still, **call).frames
    clips = [draw_clip(seed, "heldout", i) for i in range(count)]
    scores, readings, truth = [], [], []
    frame_totals = np.zeros(3, int)
    first_psnr, seconds, per_clip = [], 0.0, []
    for start in tqdm(range(0, count, batch), desc="i2v on held-out clips", disable=not progress):
        chunk = clips[start : start + batch]
        refs = torch.stack([render_frames(c.scene, ref_size, [0.0])[:, 0] for c in chunk])
        began = time.perf_counter()
        videos = generate(chunk, refs)
        seconds += time.perf_counter() - began
        small_refs = F.interpolate(refs, size=(size, size), mode="area")
        for clip, video, ref in zip(chunk, videos, small_refs):
            expected = expected_from_scene(clip.scene)
            reading = read_clip(video)
            scores.append(score_clip(reading, expected))
            readings.append(reading)
            frames_scored = _frame_scores(video, expected)
            frame_totals += frames_scored
            first_psnr.append(psnr(video[:, 0], ref))
            per_clip.append({key: scores[-1][key] for key in ("objects_expected", "shape", "colour", "motion", "all")}
                            | {"frame_objects": frames_scored[0], "frame_shape": frames_scored[1],
                               "frame_colour": frames_scored[2], "first_frame_psnr": first_psnr[-1],
                               "flicker": reading.flicker})
            truth.append(read_clip(render_frames(clip.scene, size, frame_times(KEYFRAME_FPS, frames))))
    report = aggregate(scores, readings)
    gt_flicker = float(np.mean([r.flicker for r in truth]))
    report.update({
        "frame_shape": frame_totals[1] / max(frame_totals[0], 1),
        "frame_colour": frame_totals[2] / max(frame_totals[0], 1),
        "first_frame_psnr": float(np.mean(first_psnr)),
        "ground_truth_flicker": gt_flicker,
        "flicker_ratio": report["temporal"]["flicker"] / gt_flicker if gt_flicker else None,
        "seconds_per_clip": seconds / count,
        "per_clip": per_clip,  # each clip's counts and readings, in order: for paired comparisons
    })
    return report
