"""Backward warping by a dense flow field."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def backward_warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample `image` (B, C, H, W) at each pixel + flow (B, 2, H, W) in pixels (x, y); borders clamp.
    In fp32 whatever the inputs' precision (fp16 cannot place a sample between pixels of a large
    frame), the result in the image's."""
    dtype, image, flow = image.dtype, image.float(), flow.float()
    b, _, h, w = flow.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, device=flow.device, dtype=flow.dtype),
        torch.arange(w, device=flow.device, dtype=flow.dtype),
        indexing="ij",
    )
    x = (xs + flow[:, 0]) * (2.0 / max(w - 1, 1)) - 1.0  # align_corners=True: pixel centres at +-1
    y = (ys + flow[:, 1]) * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack((x, y), dim=-1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True).to(dtype)
