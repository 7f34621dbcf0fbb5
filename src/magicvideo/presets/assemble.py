"""`magicvideo sd15 assemble OUT --base ... --motion-adapter ...`: the full-size weights folder
(presets/sd15.py's layout) from the public files a SD1.5 user already has.

Diffusers folders are linked (or copied with `copy=True`); files in another format are
converted once, with diffusers' own converters (magicvideo.formats), into the layout's
safetensors folders. Nothing is fetched. What the user did not give is left out and said:
without a ControlNet or an IP-Adapter stage 2 runs with that mechanism off, and stage 3 reuses
stage 2's motion adapter when it has none of its own.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from magicvideo.errors import WeightsError
from magicvideo.formats import SINGLE_FILE, LoraFile, load_controlnet, load_motion_adapter

LORAS_FILE = "loras.json"  # beside t2i/ i2v/ v2v/: LoRAs fused into stages 1 and 2 whenever the folder loads


@dataclass
class Parts:
    """What `assemble` is given: each a path to a diffusers folder or a public single file."""

    base: Path  # a diffusers SD1.5-class pipeline folder, or one original-format checkpoint file
    motion_adapter: Path  # a MotionAdapter folder or AnimateDiff's original .ckpt / .safetensors
    v2v_motion_adapter: Path | None = None
    # a ControlNetModel on RGB (3 channels), e.g. control_v11f1e_sd15_tile: a folder or the .pth / .safetensors
    controlnet: Path | None = None
    v2v_controlnet: Path | None = None  # the same on frame + reference (6 channels)
    config: Path | None = None  # for a single-file base: a diffusers SD1.5 folder with its configs and tokenizer
    ip_adapter: Path | None = None  # ip-adapter_sd15.safetensors / .bin
    image_encoder: Path | None = None  # the CLIPVisionModelWithProjection folder IP-Adapter was trained with
    loras: list[LoraFile] = field(default_factory=list)
    rife: Path | None = None  # a RIFE weights file (Practical-RIFE 4.5+ or 3.9) for stage 4


def check_parts(parts: Parts, out: Path) -> None:
    """Everything that can be said before anything is written: paths exist, pairs are complete."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not empty")
    if not (parts.base / "model_index.json").is_file() and not (parts.base.is_file()
                                                                 and parts.base.suffix in SINGLE_FILE):
        raise WeightsError(f"--base {parts.base}: neither a diffusers pipeline folder (model_index.json) nor a "
                           f"checkpoint file ({', '.join(SINGLE_FILE)})")
    if parts.config is not None and not (parts.config / "model_index.json").is_file():
        raise WeightsError(f"--config {parts.config}: not a diffusers pipeline folder (no model_index.json)")
    for flag, path in (("--motion-adapter", parts.motion_adapter), ("--v2v-motion-adapter", parts.v2v_motion_adapter),
                       ("--controlnet", parts.controlnet), ("--v2v-controlnet", parts.v2v_controlnet),
                       ("--ip-adapter", parts.ip_adapter), ("--image-encoder", parts.image_encoder),
                       ("--rife", parts.rife)):
        if path is not None and not path.exists():
            raise FileNotFoundError(f"{flag} {path} does not exist")
    for flag, path in (("--controlnet", parts.controlnet), ("--v2v-controlnet", parts.v2v_controlnet),
                       ("--image-encoder", parts.image_encoder)):
        if path is not None and path.is_dir() and not (path / "config.json").is_file():
            raise WeightsError(f"{flag} {path}: not a diffusers / transformers model folder (no config.json)")
    if (parts.ip_adapter is None) != (parts.image_encoder is None):
        raise ValueError("--ip-adapter and --image-encoder go together (the adapter reads that encoder's embedding)")
    for lora in parts.loras:
        lora.check()


def _place(source: Path, target: Path, copy: bool) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if copy:
        shutil.copytree(source, target) if source.is_dir() else shutil.copy2(source, target)
    else:
        target.symlink_to(source.resolve(), target_is_directory=source.is_dir())


def assemble(out: str | os.PathLike, parts: Parts, copy: bool = False) -> list[str]:
    """Write the sd15 layout at `out` from `parts`, check it (configs only), and return what was
    done and left out, one line each. On any failure nothing is left at `out`."""
    from magicvideo.formats import ip_adapter_appearance, load_single_file_pipeline
    from magicvideo.presets.sd15 import FULL, check_folder

    out = Path(out)
    check_parts(parts, out)
    notes: list[str] = []
    work = out.with_name(f".{out.name}.partial")
    shutil.rmtree(work, ignore_errors=True)
    try:
        if parts.base.is_dir():
            _place(parts.base, work / "t2i", copy)
            notes.append(f"t2i: {parts.base}")
        else:
            load_single_file_pipeline(parts.base, parts.config).save_pretrained(work / "t2i")
            notes.append(f"t2i: converted from {parts.base.name} (a single-file checkpoint)")
        unet_config = json.loads((work / "t2i" / "unet" / "config.json").read_text())
        for stage, given, settings in (("i2v", parts.motion_adapter, FULL.i2v),
                                       ("v2v", parts.v2v_motion_adapter, FULL.v2v)):
            (work / stage).mkdir(parents=True)
            (work / stage / "stage.json").write_text(json.dumps(settings, indent=2) + "\n")
            if given is None:  # stage 3 without its own: stage 2's motion modules on the shared UNet
                (work / stage / "motion_adapter").symlink_to(Path("..", "i2v", "motion_adapter"),
                                                             target_is_directory=True)
                notes.append(f"{stage}/motion_adapter: stage 2's (no --v2v-motion-adapter given)")
            elif given.is_dir():
                _place(given, work / stage / "motion_adapter", copy)
                notes.append(f"{stage}/motion_adapter: {given}")
            else:
                load_motion_adapter(given).save_pretrained(work / stage / "motion_adapter")
                notes.append(f"{stage}/motion_adapter: converted from {given.name} (AnimateDiff's original format)")
        for stage, given, what in (("i2v", parts.controlnet, "ControlNet on the reference RGB"),
                                   ("v2v", parts.v2v_controlnet, "ControlNet on frame + reference")):
            if given is None:
                notes.append(f"{stage}/controlnet: none, so stage {2 if stage == 'i2v' else 3} runs without its {what}")
            elif given.is_dir():
                _place(given, work / stage / "controlnet", copy)
                notes.append(f"{stage}/controlnet: {given}")
            else:
                load_controlnet(given, unet_config).save_pretrained(work / stage / "controlnet")
                notes.append(f"{stage}/controlnet: converted from {given.name} (its original format)")
        if parts.ip_adapter is None:
            notes.append("i2v/appearance: none, so stage 2 runs without the appearance encoder (give --ip-adapter "
                         "and --image-encoder)")
        else:
            _place(parts.image_encoder, work / "i2v" / "image_encoder", copy)
            ip_adapter_appearance(parts.ip_adapter, unet_config, work / "i2v" / "appearance")
            notes.append(f"i2v/appearance: converted from {parts.ip_adapter.name}, image encoder {parts.image_encoder}")
        if parts.rife is not None:
            from magicvideo.formats import RIFE_FILE, RIFE_SUFFIXES
            from magicvideo.models.rife4 import load_rife

            if parts.rife.suffix not in RIFE_SUFFIXES:
                raise WeightsError(f"--rife {parts.rife}: expected a {', '.join(RIFE_SUFFIXES)} file")

            model = load_rife(parts.rife)  # a file it does not read fails here, before the folder exists
            _place(parts.rife, work / "vfi" / f"{RIFE_FILE}{parts.rife.suffix}", copy)
            notes.append(f"vfi: {parts.rife.name} ({type(model).__name__}), stage 4 interpolates with it")
        if parts.loras:
            listed = []
            for i, lora in enumerate(parts.loras):
                name = f"loras/{i}_{lora.path.name}"
                _place(lora.path, work / name, copy)
                listed.append({"file": name, "scale": lora.scale})
                notes.append(f"lora: {lora.path.name} at {lora.scale:g}, fused into stages 1 and 2 when loaded")
            (work / LORAS_FILE).write_text(json.dumps(listed, indent=2) + "\n")
        check_folder(work)
        if out.exists():
            out.rmdir()  # empty (checked): the finished folder takes its place whole
        work.rename(out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return notes


def folder_loras(root: str | os.PathLike) -> list[LoraFile]:
    """The LoRAs an assembled folder lists (LORAS_FILE), resolved against it."""
    listed = Path(root) / LORAS_FILE
    if not listed.is_file():
        return []
    entries = json.loads(listed.read_text())
    return [LoraFile(Path(root) / entry["file"], float(entry.get("scale", 1.0))) for entry in entries]
