"""Motion LoRA: a low-rank update of the motion modules, trained and saved apart from them.

AnimateDiff's MotionLoRA adapts a trained motion module to new motions by training low-rank
updates W + (alpha / r) B A of its linear layers, the module itself frozen. We use it for the
same end and for a reason of our own: every shipped weight file stays in git history for good,
and a stage version that only moves the motion modules then costs ~1 MB (rank 16 on the tiny
preset) instead of a new 7.7 MB motion adapter.

The layers are peft's (`UNetMotionModel.add_adapter`); targets are the motion modules' temporal
attention (queries, keys, values, output) and their feed-forward, never the spatial UNet or an
attention processor's own weights (motion text attention, the appearance branch). B starts at
zero, so attaching a LoRA leaves the UNet's output unchanged.

The file is a safetensors of peft's state dict (adapter name stripped) with the rank and alpha
in its metadata.
"""

from __future__ import annotations

import os

import torch
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors import safe_open
from safetensors.torch import save_file

ADAPTER = "motion_lora"
_BLOCK = r".*motion_modules\.\d+"
# proj_in and proj_out stay out: diffusers calls them as proj_in(input=x), which peft's layers do not take
TARGETS = rf"{_BLOCK}\.transformer_blocks\.\d+\.((attn1|attn2)\.(to_q|to_k|to_v|to_out\.0)|ff\.net\.(0\.proj|2))"


def has_motion_lora(unet: torch.nn.Module) -> bool:
    return ADAPTER in getattr(unet, "peft_config", {})


def attach_motion_lora(unet: torch.nn.Module, rank: int, alpha: float | None = None) -> list[torch.nn.Parameter]:
    """Add a zero-initialised LoRA of `rank` to the motion modules; returns its parameters.
    alpha defaults to the rank (scale 1)."""
    if not any("motion_modules" in name for name, _ in unet.named_modules()):
        raise ValueError("this UNet has no motion modules to attach a motion LoRA to")
    if has_motion_lora(unet):
        raise ValueError("this UNet already has a motion LoRA")
    if rank < 1:
        raise ValueError(f"motion LoRA rank must be at least 1, got {rank}")
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha or rank, target_modules=TARGETS, init_lora_weights=True),
                     adapter_name=ADAPTER)
    return motion_lora_parameters(unet)


def motion_lora_parameters(unet: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for name, p in unet.named_parameters() if f".{ADAPTER}." in name]


def save_motion_lora(unet: torch.nn.Module, path: str | os.PathLike) -> None:
    """Write the LoRA to `path` (safetensors), in the precision it is held in."""
    config = unet.peft_config[ADAPTER]
    state = {k: v.detach().contiguous() for k, v in get_peft_model_state_dict(unet, adapter_name=ADAPTER).items()}
    save_file(state, path, metadata={"rank": str(config.r), "alpha": str(config.lora_alpha)})


def load_motion_lora(unet: torch.nn.Module, path: str | os.PathLike) -> None:
    """Attach the LoRA saved at `path` to `unet`'s motion modules, in the UNet's precision."""
    with safe_open(path, "pt") as f:
        meta = f.metadata() or {}
        if "rank" not in meta:
            raise ValueError(f"{path} is not a motion LoRA (no rank in its metadata)")
        state = {k: f.get_tensor(k) for k in f.keys()}
    attach_motion_lora(unet, int(meta["rank"]), float(meta["alpha"]))
    dtype = next(unet.parameters()).dtype
    result = set_peft_model_state_dict(unet, {k: v.to(dtype) for k, v in state.items()}, adapter_name=ADAPTER)
    unexpected = getattr(result, "unexpected_keys", [])
    missing = [k for k in getattr(result, "missing_keys", []) if f".{ADAPTER}." in k]
    if unexpected or missing:
        raise ValueError(f"{path} does not match this UNet's motion modules "
                         f"({len(missing)} LoRA weights missing, {len(unexpected)} unexpected)")


def without_lora(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict with LoRA weights left out and peft's wrapped layers under their own names
    (`to_q.base_layer.weight` -> `to_q.weight`): the frozen weights, as saved without a LoRA."""
    return {k.replace(".base_layer.", "."): v for k, v in state.items() if ".lora_" not in k}
