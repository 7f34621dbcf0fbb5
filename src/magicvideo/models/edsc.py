"""The EDSC-GAN interpolator: a VQ-GAN-style encoder-decoder whose decoder ends in an EDSC head.

EDSC (Enhanced Deformable Separable Convolution; Cheng & Chen, TPAMI 2021) synthesises each
output pixel from both neighbouring frames with a per-pixel separable K x K kernel whose taps
each carry a learned offset, plus an occlusion mask and a residual. As in MagicVideo-V2, the
head is conditioned on a pretrained lightweight interpolator (our IFNet): the taps are
centred on IFNet's flows, and the head is zero-initialised so that an untrained model
reproduces IFNet exactly and training only has to learn the correction.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn


class ResBlock(nn.Module):
    def __init__(self, channels: int, groups: int = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(groups, channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, 1, 1),
            nn.GroupNorm(groups, channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def deformable_separable_sample(
    image: torch.Tensor, flow: torch.Tensor, kv: torch.Tensor, kh: torch.Tensor, offsets: torch.Tensor,
    dilation: float = 1.0,
) -> torch.Tensor:
    """EDSC sampling (Cheng & Chen 2021, eq. 3): out(p) = sum_ij kv_i(p) kh_j(p) I(p + flow(p) + d(i, j) + off_ij(p)).

    image (B, C, H, W); flow (B, 2, H, W) in pixels (x, y); kv, kh (B, K, H, W);
    offsets (B, 2K^2, H, W) as (x, y) per tap, taps in row-major order.
    """
    b, c, h, w = image.shape
    k = kv.shape[1]
    r = torch.arange(k, device=image.device, dtype=image.dtype) - (k - 1) / 2
    ty, tx = torch.meshgrid(r * dilation, r * dilation, indexing="ij")  # (K, K) tap displacements
    ys, xs = torch.meshgrid(
        torch.arange(h, device=image.device, dtype=image.dtype),
        torch.arange(w, device=image.device, dtype=image.dtype), indexing="ij",
    )
    off = offsets.view(b, k * k, 2, h, w)
    px = xs + flow[:, 0:1] + tx.reshape(1, -1, 1, 1) + off[:, :, 0]  # (B, K^2, H, W)
    py = ys + flow[:, 1:2] + ty.reshape(1, -1, 1, 1) + off[:, :, 1]
    grid = torch.stack((px * (2.0 / max(w - 1, 1)) - 1, py * (2.0 / max(h - 1, 1)) - 1), dim=-1)
    taps = F.grid_sample(image, grid.view(b, k * k * h, w, 2), mode="bilinear", padding_mode="border",
                         align_corners=True).view(b, c, k * k, h, w)
    weights = (kv.unsqueeze(2) * kh.unsqueeze(1)).view(b, 1, k * k, h, w)  # outer product per pixel
    return (taps * weights).sum(2)


class EDSCInterpolator(ModelMixin, ConfigMixin):
    """forward(img0, img1, t, prior) -> frame at t, where prior is IFNet's (frame, flow, mask)."""

    @register_to_config
    def __init__(self, widths: tuple[int, ...] = (32, 64, 96), kernel_size: int = 3, dilation: float = 1.0):
        super().__init__()
        w0, w1, w2 = widths
        k = kernel_size
        # inputs: both frames, IFNet's frame, its two flows (scaled), its mask, and t
        self.stem = nn.Conv2d(3 + 3 + 3 + 4 + 1 + 1, w0, 3, 1, 1)
        self.enc0 = ResBlock(w0)
        self.down1 = nn.Conv2d(w0, w1, 3, 2, 1)
        self.enc1 = ResBlock(w1)
        self.down2 = nn.Conv2d(w1, w2, 3, 2, 1)
        self.mid = nn.Sequential(ResBlock(w2), ResBlock(w2))
        self.up1 = nn.Conv2d(w2 + w1, w1, 3, 1, 1)
        self.dec1 = ResBlock(w1)
        self.up0 = nn.Conv2d(w1 + w0, w0, 3, 1, 1)
        self.dec0 = ResBlock(w0)
        self.head_channels = 2 * (2 * k + 2 * k * k) + 1 + 3  # per frame: kv, kh, offsets; mask; residual
        self.head = nn.Sequential(nn.GroupNorm(8, w0), nn.SiLU(), nn.Conv2d(w0, self.head_channels, 3, 1, 1))
        nn.init.zeros_(self.head[-1].weight)  # start as IFNet: delta kernels, no offsets, IFNet's mask
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, img0, img1, t, prior_frame, prior_flow, prior_mask) -> torch.Tensor:
        """All images (B, 3, H, W) in [0, 1]; t float or (B,); prior_flow (B, 4, H, W) in pixels;
        prior_mask (B, 1, H, W) in [0, 1]. H and W must be multiples of 4."""
        b, _, h, w = img0.shape
        k = self.config.kernel_size
        tmap = torch.as_tensor(t, dtype=img0.dtype, device=img0.device).reshape(-1, 1, 1, 1).expand(b, 1, h, w)
        x = torch.cat((img0, img1, prior_frame, prior_flow / 8.0, prior_mask, tmap), 1)
        e0 = self.enc0(self.stem(x))
        e1 = self.enc1(self.down1(F.silu(e0)))
        z = self.mid(self.down2(F.silu(e1)))
        d1 = self.dec1(self.up1(torch.cat((F.interpolate(z, scale_factor=2.0), e1), 1)))
        d0 = self.dec0(self.up0(torch.cat((F.interpolate(d1, scale_factor=2.0), e0), 1)))
        out = self.head(d0)

        delta = torch.zeros(1, k, 1, 1, device=img0.device, dtype=img0.dtype)
        delta[:, k // 2] = 1.0
        per = 2 * k + 2 * k * k
        frames = []
        for j, image in enumerate((img0, img1)):
            p = out[:, j * per : (j + 1) * per]
            kv, kh, offsets = delta + p[:, :k], delta + p[:, k : 2 * k], p[:, 2 * k :]
            flow = prior_flow[:, 2 * j : 2 * j + 2]
            frames.append(deformable_separable_sample(image, flow, kv, kh, offsets, self.config.dilation))
        logit = torch.logit(prior_mask.clamp(1e-4, 1 - 1e-4)) + out[:, 2 * per : 2 * per + 1]
        mask = torch.sigmoid(logit)
        return frames[0] * mask + frames[1] * (1 - mask) + out[:, 2 * per + 1 :]


class PatchDiscriminator(ModelMixin, ConfigMixin):
    """A PatchGAN critic on (frame, the neighbours' average): one score per ~22x22 patch."""

    @register_to_config
    def __init__(self, width: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(6, width, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.GroupNorm(8, 2 * width), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * width, 4 * width, 4, 1, 1), nn.GroupNorm(8, 4 * width), nn.LeakyReLU(0.2),
            nn.Conv2d(4 * width, 1, 4, 1, 1),
        )

    def forward(self, frame: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat((frame, context), 1))
