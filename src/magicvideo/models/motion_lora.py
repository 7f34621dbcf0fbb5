"""Motion LoRA: a low-rank update of the motion modules, trained and saved apart from them.

AnimateDiff's MotionLoRA adapts a trained motion module to new motions by training low-rank
updates W + (alpha / r) B A of its linear layers, the module itself frozen. We use it for the
same end and for a reason of our own: every shipped weight file stays in git history for good,
and a stage version that only moves the motion modules then costs ~1 MB (rank 16 on the tiny
preset) instead of a new 7.7 MB motion adapter.

Built on models/lora.py. Targets are the motion modules' temporal attention (queries, keys,
values, output) and their feed-forward, never the spatial UNet or an attention processor's own
weights (motion text attention, the appearance branch).
"""

from __future__ import annotations

import os

import torch

from magicvideo.models.lora import attach_lora, has_lora, load_lora, lora_parameters, save_lora

ADAPTER = "motion_lora"
_BLOCK = r".*motion_modules\.\d+"
# proj_in and proj_out stay out: diffusers calls them as proj_in(input=x), which peft's layers do not take
TARGETS = rf"{_BLOCK}\.transformer_blocks\.\d+\.((attn1|attn2)\.(to_q|to_k|to_v|to_out\.0)|ff\.net\.(0\.proj|2))"


def _check_motion_modules(unet: torch.nn.Module) -> None:
    if not any("motion_modules" in name for name, _ in unet.named_modules()):
        raise ValueError("this UNet has no motion modules to attach a motion LoRA to")


def has_motion_lora(unet: torch.nn.Module) -> bool:
    return has_lora(unet, ADAPTER)


def attach_motion_lora(unet: torch.nn.Module, rank: int, alpha: float | None = None) -> list[torch.nn.Parameter]:
    """Add a zero-initialised LoRA of `rank` to the motion modules; returns its parameters.
    alpha defaults to the rank (scale 1)."""
    _check_motion_modules(unet)
    return attach_lora(unet, ADAPTER, TARGETS, rank, alpha)


def motion_lora_parameters(unet: torch.nn.Module) -> list[torch.nn.Parameter]:
    return lora_parameters(unet, ADAPTER)


def save_motion_lora(unet: torch.nn.Module, path: str | os.PathLike) -> None:
    """Write the LoRA to `path` (safetensors), in the precision it is held in."""
    save_lora(unet, ADAPTER, path)


def load_motion_lora(unet: torch.nn.Module, path: str | os.PathLike) -> None:
    """Attach the LoRA saved at `path` to `unet`'s motion modules, in the UNet's precision."""
    _check_motion_modules(unet)
    load_lora(unet, ADAPTER, path, TARGETS)
