"""Named LoRA adapters on diffusers models: attach, save, load and fuse low-rank updates
W + (alpha / r) B A, the model itself frozen.

Why we ship LoRAs: every weight file stays in git history for good, so a new version of a
component that only nudges a trained model (the stage-1 UNet trained further, the motion modules
taught more motion) costs a LoRA of ~1-2 MB instead of a new copy of the model. The layers are
peft's, added with diffusers' `add_adapter`; B starts at zero, so attaching a LoRA leaves the
model's output unchanged.

A LoRA file is a safetensors of peft's state dict (adapter name stripped) with the rank, alpha
and target pattern in its metadata, so it loads without a config of its own.
"""

from __future__ import annotations

import os

import torch
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors import safe_open
from safetensors.torch import save_file


def has_lora(model: torch.nn.Module, name: str) -> bool:
    return name in getattr(model, "peft_config", {})


def attach_lora(model: torch.nn.Module, name: str, targets: str, rank: int,
                alpha: float | None = None) -> list[torch.nn.Parameter]:
    """Add a zero-initialised LoRA called `name` of `rank` to the layers whose names match the
    regular expression `targets`; returns its parameters. alpha defaults to the rank (scale 1)."""
    if has_lora(model, name):
        raise ValueError(f"this model already has a LoRA called {name!r}")
    if rank < 1:
        raise ValueError(f"LoRA rank must be at least 1, got {rank}")
    model.add_adapter(LoraConfig(r=rank, lora_alpha=alpha or rank, target_modules=targets, init_lora_weights=True),
                      adapter_name=name)
    return lora_parameters(model, name)


def lora_parameters(model: torch.nn.Module, name: str) -> list[torch.nn.Parameter]:
    return [p for key, p in model.named_parameters() if f".{name}." in key]


def save_lora(model: torch.nn.Module, name: str, path: str | os.PathLike, dtype: torch.dtype | None = None) -> None:
    """Write LoRA `name` to `path` (safetensors), in `dtype` or the precision it is held in."""
    config = model.peft_config[name]
    targets = config.target_modules if isinstance(config.target_modules, str) else ""
    state = {k: v.detach().to(dtype or v.dtype).contiguous()
             for k, v in get_peft_model_state_dict(model, adapter_name=name).items()}
    save_file(state, path, metadata={"rank": str(config.r), "alpha": str(config.lora_alpha), "targets": targets})


def load_lora(model: torch.nn.Module, name: str, path: str | os.PathLike, targets: str | None = None) -> None:
    """Attach the LoRA saved at `path` to `model` as `name`, in the model's precision. `targets`
    defaults to the pattern stored in the file."""
    with safe_open(path, "pt") as f:
        meta = f.metadata() or {}
        if "rank" not in meta:
            raise ValueError(f"{path} is not a LoRA file (no rank in its metadata)")
        state = {k: f.get_tensor(k) for k in f.keys()}
    targets = targets or meta.get("targets")
    if not targets:
        raise ValueError(f"{path} names no target layers and none were given")
    attach_lora(model, name, targets, int(meta["rank"]), float(meta["alpha"]))
    dtype = next(model.parameters()).dtype
    result = set_peft_model_state_dict(model, {k: v.to(dtype) for k, v in state.items()}, adapter_name=name)
    unexpected = getattr(result, "unexpected_keys", [])
    missing = [k for k in getattr(result, "missing_keys", []) if f".{name}." in k]
    if unexpected or missing:
        raise ValueError(f"{path} does not match this model ({len(missing)} LoRA weights missing, "
                         f"{len(unexpected)} unexpected)")


def fuse_lora(model: torch.nn.Module) -> torch.nn.Module:
    """Merge every attached LoRA into the weights it updates and drop peft's layers: the model
    then runs at its own speed and saves as a plain model. A model with none is left as it is."""
    if not getattr(model, "peft_config", None):
        return model
    model.fuse_lora()
    model.unload_lora()
    return model


def without_lora(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict with LoRA weights left out and peft's wrapped layers under their own names
    (`to_q.base_layer.weight` -> `to_q.weight`): the frozen weights, as saved without a LoRA."""
    return {k.replace(".base_layer.", "."): v for k, v in state.items() if ".lora_" not in k}


@torch.no_grad()
def extract_lora(model: torch.nn.Module, tuned: dict[str, torch.Tensor], name: str, targets: str,
                 rank: int) -> dict[str, float]:
    """Attach LoRA `name` of `rank` to `model` (the base) so that, in every layer `targets` matches,
    B A is the best rank-`rank` approximation (truncated SVD) of that layer's weight in the `tuned`
    state dict minus the base's. Returns, per layer, the share of the change's squared norm kept.

    Why: a full fine-tune learns what a LoRA trained from zero does not (stage 1's shapes, measured
    in benchmarks/results/t2i_gpu.md), and a LoRA is what the weights budget can take; this carries
    one into the other. Only the matched layers' weights travel: biases and norms stay the base's.
    Convolutions are cut as (out, in * k * k) matrices, which is how peft's conv LoRA composes."""
    attach_lora(model, name, targets, rank)
    kept = {}
    for layer_name, layer in model.named_modules():
        if not hasattr(layer, "lora_A") or name not in layer.lora_A:
            continue
        base = layer.base_layer.weight
        key = f"{layer_name}.weight"  # peft's layer sits where the plain one was
        if key not in tuned:
            raise ValueError(f"the tuned weights have no {key}")
        delta = (tuned[key].to(base) - base).reshape(base.shape[0], -1).float()
        u, s, vh = torch.linalg.svd(delta, full_matrices=False)
        r = min(rank, len(s))
        a, b = layer.lora_A[name].weight, layer.lora_B[name].weight
        a.zero_()  # a layer narrower than the rank keeps its spare rows at zero
        b.zero_()
        scale = layer.scaling[name]
        a.view(a.shape[0], -1)[:r] = vh[:r].to(a)
        b.view(b.shape[0], -1)[:, :r] = (u[:, :r] * s[:r] / scale).to(b)
        kept[layer_name] = float((s[:r] ** 2).sum() / (s**2).sum().clamp(min=1e-30))
    return kept
