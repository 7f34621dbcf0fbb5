"""Classifier-free guidance as a wrapper around a model's prediction, which the samplers call as
they would the model itself (as k-diffusion's CFG denoiser does).

The batch the model sees is branch-major: `branches` copies of the latents, one per condition, in
the order (negative, [contrast,] prompt); the caller lays its conditions out the same way.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Predict = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Guided:
    """`Guided(predict, scale)(x, t)`: `predict` on the latents once per branch, combined as
    `uncond + scale (cond - uncond)`; with `contrast_scale` c, a third branch on a contrast
    condition adds `c (cond - contrast)`, which amplifies only what the prompt says beyond the
    contrast (its motion, where the contrast is its still version). scale <= 1 and no contrast:
    one branch, the prompt alone."""

    def __init__(self, predict: Predict, scale: float, contrast_scale: float = 0.0) -> None:
        if contrast_scale and scale <= 1.0:
            raise ValueError("a contrast prompt works with classifier-free guidance (guidance > 1)")
        self.predict, self.scale, self.contrast_scale = predict, scale, contrast_scale

    @property
    def branches(self) -> int:
        return 3 if self.contrast_scale else 2 if self.scale > 1.0 else 1

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        pred = self.predict(torch.cat([x] * self.branches), t)
        if self.branches == 1:
            return pred
        if self.branches == 3:
            uncond, contrast, cond = pred.chunk(3)
            return uncond + self.scale * (cond - uncond) + self.contrast_scale * (cond - contrast)
        uncond, cond = pred.chunk(2)
        return uncond + self.scale * (cond - uncond)
