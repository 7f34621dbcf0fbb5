"""Context windows: clips longer than the motion modules' length, sampled as overlapping windows
whose predictions are blended every step, with FreeNoise's noise rescheduling so the windows
start from related noise and agree (Qiu et al. 2023, "FreeNoise: Tuning-Free Longer Video
Diffusion via Noise Rescheduling").

A clip no longer than the window is one window over all its frames: exactly the plain loop.
"""

from __future__ import annotations

import torch


def context_windows(frames: int, length: int, stride: int) -> list[list[int]]:
    """Frame indices of each window: `length` frames, starts `stride` apart, the last one ending
    at the last frame (so every frame is covered); one window of all frames when they fit."""
    if length < 1 or stride < 1:
        raise ValueError(f"context length and stride must be at least 1, got {length} and {stride}")
    if frames <= length:
        return [list(range(frames))]
    starts = list(range(0, frames - length + 1, stride))
    if starts[-1] != frames - length:
        starts.append(frames - length)
    return [list(range(s, s + length)) for s in starts]


def window_weights(length: int) -> torch.Tensor:
    """(length,) blending weights, highest in the middle, lowest (not zero) at the edges:
    FreeNoise's pyramid weighting, so a frame counts most from the window where it is central and
    the seams fade instead of switching."""
    i = torch.arange(length, dtype=torch.float32)
    return torch.minimum(i + 1, length - i)


def free_noise(noise: torch.Tensor, length: int, stride: int, seed: int = 0) -> torch.Tensor:
    """Noise (B, C, F, h, w) rescheduled for windows: the first `length` frames keep theirs; each
    later chunk of `stride` frames takes the noise of the frames `length` before it, in a seeded
    shuffled order. Windows then start from noise they share, reordered (what FreeNoise found
    keeps content consistent across windows), instead of independent noise."""
    frames = noise.shape[2]
    if frames <= length:
        return noise
    out = noise.clone()
    g = torch.Generator().manual_seed(seed)
    for start in range(length, frames, stride):
        stop = min(start + stride, frames)
        source = torch.arange(start - length, stop - length)
        out[:, :, start:stop] = out[:, :, source[torch.randperm(len(source), generator=g)]]
    return out


def windowed(predict, x: torch.Tensor, rows: dict[str, torch.Tensor | None], length: int, stride: int):
    """`predict(x, **rows)` over context windows of x's frames (x: (B, C, F, h, w)), blended with
    `window_weights`. `rows`: per-frame inputs laid out (B*F, ...), frame-minor (the text states,
    image tokens and ControlNet input of every frame), sliced to each window alongside x."""
    b, _, frames = x.shape[:3]
    windows = context_windows(frames, length, stride)
    if len(windows) == 1:
        return predict(x, **rows)
    total = torch.zeros_like(x, dtype=torch.float32)
    weight = torch.zeros(frames, dtype=torch.float32, device=x.device)
    w = window_weights(length).to(x.device)
    for index in windows:
        sliced = {k: None if v is None else v.reshape(b, frames, *v.shape[1:])[:, index].reshape(-1, *v.shape[1:])
                  for k, v in rows.items()}
        total[:, :, index] += predict(x[:, :, index], **sliced).float() * w.view(1, 1, -1, 1, 1)
        weight[index] += w
    return total / weight.view(1, 1, -1, 1, 1)
