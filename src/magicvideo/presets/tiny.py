"""Every shipped weights folder of the tiny preset, and how a tiny stage folder finds its parts.

Each stage loads the VAE and UNet it was trained with: a folder names them in its stage.json
(or, for a stage-1 LoRA, its config.json) relative to itself, so the stages can stand on
different latent spaces while the hand-offs between them stay in pixels.
"""

from __future__ import annotations

import json
from pathlib import Path

from magicvideo.stages.parts import STAGE_FILE, named_part

TINY = Path(__file__).resolve().parent.parent / "weights" / "tiny"
TINY_VAE = TINY / "vae"  # the preset's latent space: 4x down, so the world's objects span several cells
TINY_UNET = TINY / "t2i_unet"
TINY_UNET_VAE = TINY / "vae_8x"  # the 8x VAE TINY_UNET and the stages built on it were trained with
TINY_T2I_LORA = TINY / "t2i_lora"  # stage 1's UNet trained further, as a LoRA over TINY_UNET (the base I2V keeps)
TINY_T2I = TINY_T2I_LORA  # what stage 1 loads by default
TINY_I2V = TINY / "i2v"
TINY_V2V = TINY / "v2v"
TINY_EDSC = TINY / "vfi_edsc"  # trained on the world: the tiny cascade interpolates with it
TINY_EDSC_NATURAL = TINY / "vfi_edsc_natural"  # world and photographs under camera motion: for footage


def i2v_parts(folder: Path) -> dict[str, Path]:
    """The UNet and VAE a tiny stage-2 folder loads: its own, those its stage.json names, or else
    the shipped UNet and the VAE it was trained with."""
    if not (folder / STAGE_FILE).is_file():
        raise FileNotFoundError(f"no image-to-video weights in {folder} (no {STAGE_FILE})")
    named = json.loads((folder / STAGE_FILE).read_text())
    if named.get("stage"):  # a LoRA over another stage-2 folder: that folder's
        return i2v_parts(named_part(folder, named["stage"], folder))
    return {part: folder / part if (folder / part / "config.json").is_file()
            else named_part(folder, named.get(part), default)
            for part, default in (("unet", TINY_UNET), ("vae", TINY_UNET_VAE))}
