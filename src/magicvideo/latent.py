"""The latent grid, read from the models' configs: the tiny VAE downsamples 4x, SD1.5's 8x, and
nothing else may assume either."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _config(model_or_config: Any) -> dict:
    return model_or_config if isinstance(model_or_config, dict) else dict(model_or_config.config)


def vae_factor(vae: Any) -> int:
    """Pixels per latent cell along a side: 2 ** (levels - 1) of an AutoencoderKL (or its config)."""
    return 2 ** (len(_config(vae)["block_out_channels"]) - 1)


def check_control_embedding(channels: Sequence[int], vae: Any) -> None:
    """A ControlNet's condition embedding halves the frame once per width after the first; its
    output must land on the VAE's latent grid."""
    if 2 ** (len(channels) - 1) != vae_factor(vae):
        raise ValueError(f"controlnet_channels {list(channels)} downsample {2 ** (len(channels) - 1)}x, but the "
                         f"VAE's latents are {vae_factor(vae)}x: give {vae_factor(vae).bit_length()} widths")


def size_multiple(unet: Any, vae: Any) -> int:
    """Image sides a UNet (or config) on a VAE (or config) takes are multiples of this: the VAE's
    factor times the UNet's own downsampling (16 for the tiny preset, 64 for SD1.5)."""
    return vae_factor(vae) * 2 ** (len(_config(unet)["block_out_channels"]) - 1)


def check_size(height: int, width: int, multiple: int) -> None:
    if height <= 0 or width <= 0 or height % multiple or width % multiple:
        raise ValueError(f"image size must be positive multiples of {multiple}, got {height}x{width}")
