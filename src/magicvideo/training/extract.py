"""A stage-1 LoRA taken from a fully fine-tuned UNet by truncated SVD (then fitted by distillation
in training.t2i)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel

from magicvideo.models.lora import extract_lora
from magicvideo.presets.tiny import TINY_UNET
from magicvideo.stages.t2i import EXTRACT_TARGETS, LORA_NAME, STAGE_FILE, save_t2i_lora


def lora_from_fine_tune(tuned: str | os.PathLike, rank: int = 16, base: str | os.PathLike | None = None,
                        ) -> tuple[UNet2DConditionModel, UNet2DConditionModel, dict[str, float]]:
    """The fully fine-tuned UNet `tuned` (a UNet folder, or a saved stage's) and a copy of it as the
    `base` UNet (default: the shipped one) plus a rank-`rank` LoRA on every matrix (EXTRACT_TARGETS,
    the truncated SVD of each change: models.lora.extract_lora) and the tuned biases and norms.
    Returns (base + LoRA, tuned, share of each layer's change kept). Why: a full fine-tune learns
    shapes that a LoRA trained from zero did not, and only a LoRA fits the weights budget
    (benchmarks/results/t2i_gpu.md)."""
    tuned = Path(tuned)
    tuned = tuned / "unet" if (tuned / STAGE_FILE).is_file() else tuned
    for folder in (tuned, Path(base or TINY_UNET)):
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{folder} is not a diffusers UNet folder (no config.json)")
    unet = UNet2DConditionModel.from_pretrained(base or TINY_UNET, torch_dtype=torch.float32)
    teacher = UNet2DConditionModel.from_pretrained(tuned, torch_dtype=torch.float32)
    state = teacher.state_dict()
    if {k: v.shape for k, v in state.items()} != {k: v.shape for k, v in unet.state_dict().items()}:
        raise ValueError(f"{tuned} is not the same architecture as the base UNet {base or TINY_UNET}")
    unet.requires_grad_(False)
    kept = extract_lora(unet, state, LORA_NAME, EXTRACT_TARGETS, rank)
    with torch.no_grad():  # peft names a wrapped layer's bias `base_layer.bias`
        for key, p in unet.named_parameters():
            if p.dim() < 2 and ".lora_" not in key:
                p.copy_(state[key.replace(".base_layer.", ".")])
    return unet, teacher, kept


def extract_t2i_lora(tuned: str | os.PathLike, out: str | os.PathLike, rank: int = 16,
                     base: str | os.PathLike | None = None) -> dict[str, float]:
    """A stage-1 LoRA folder at `out` carrying the fully fine-tuned UNet `tuned` over `base` by
    truncated SVD alone (lora_from_fine_tune; training.t2i.distill_t2i_lora then fits it to the
    fine-tune's predictions). Returns the share of each layer's change kept."""
    unet, _, kept = lora_from_fine_tune(tuned, rank, base)
    save_t2i_lora(unet, out, str(base) if base else None, vectors=True)
    return kept
