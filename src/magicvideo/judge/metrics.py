"""Frame-level fidelity metrics against ground truth."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB for images in [0, 1] (any matching shapes)."""
    mse = torch.mean((pred.float() - target.float()) ** 2)
    return float("inf") if mse == 0 else float(10 * torch.log10(1.0 / mse))


def ssim(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03) of
    (N, C, H, W) images in [0, 1], computed per channel and averaged."""
    x, y = pred.float(), target.float()
    n, c = x.shape[:2]
    g = torch.exp(-((torch.arange(11, dtype=torch.float32) - 5) ** 2) / (2 * 1.5**2))
    g = g / g.sum()
    window = (g[:, None] * g[None, :]).expand(c, 1, 11, 11).contiguous()

    def blur(z: torch.Tensor) -> torch.Tensor:
        return F.conv2d(z, window, groups=c)  # valid region only, as in the reference code

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return float(s.mean())
