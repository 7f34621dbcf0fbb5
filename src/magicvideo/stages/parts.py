"""How a saved stage folder names and checks the diffusers components it loads."""

from __future__ import annotations

import os
from pathlib import Path

STAGE_FILE = "stage.json"


def part_name(folder: str | os.PathLike, part: str | os.PathLike) -> str:
    """How a folder being written names another folder it loads (`named_part` reads it back):
    relative to itself where the two share a tree (a run folder and the repository's weights, a
    shipped folder and its neighbour), so they move together; else absolute."""
    folder, part = Path(folder).resolve(), Path(part).resolve()
    if Path(os.path.commonpath([folder, part])) == Path(folder.anchor):
        return str(part)
    return os.path.relpath(part, folder)


def named_part(folder: Path, name: str | None, default: Path) -> Path:
    """A component a weights folder names: relative to the folder when it is there (how the
    shipped folders name theirs), else as given; none named: `default`."""
    if not name:
        return default
    return folder / name if (folder / name).is_dir() else Path(name)


def check_weights_folder(folder: Path, name: str) -> None:
    """A diffusers component folder we can load: its config and safetensors weights (never a pickle)."""
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"missing {name} weights: no {folder / 'config.json'}")
    if not any(folder.glob("*.safetensors")):
        raise FileNotFoundError(f"missing {name} weights: no .safetensors file in {folder} (only safetensors are read)")


def variant(folder: Path) -> dict[str, str]:
    """{"variant": "fp16"} for a folder that holds only variant weight files
    (`diffusion_pytorch_model.fp16.safetensors`, as a hub download with `variant="fp16"` leaves
    it), which diffusers and transformers load only when told; {} otherwise."""
    names = [p.name for p in Path(folder).glob("*.safetensors")
             if p.name.startswith(("diffusion_pytorch_model.", "model."))]  # (not our own files beside them)
    plain = [n for n in names if n.count(".") == 1]
    tagged = {n.split(".")[-2] for n in names if n.count(".") == 2}
    return {"variant": tagged.pop()} if names and not plain and len(tagged) == 1 else {}
