"""What every trainer shares: YAML configs into dataclasses, atomic resumable checkpoints,
and the model card written beside shipped weights."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
from pathlib import Path
from typing import Any

import torch
import yaml

from magicvideo.media import atomic_path

CHECKPOINT = "checkpoint.pt"


def load_config(cls: type, path: str | os.PathLike | None, overrides: dict[str, Any] | None = None):
    """A config dataclass from a YAML file (unknown keys are an error) plus overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        values = yaml.safe_load(Path(path).read_text()) or {}
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown} for {cls.__name__}; known: {sorted(names)}")
    for f in dataclasses.fields(cls):  # YAML gives lists where the dataclass wants tuples
        if isinstance(values.get(f.name), list):
            values[f.name] = tuple(values[f.name])
    return cls(**values)


def save_config(config, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))


def start_run(config, out: str | os.PathLike) -> Path:
    """Every trainer's first step: the run folder made and its config written (by the main
    process), the seed set. Returns the folder."""
    from magicvideo.device import process_state

    out = Path(out)
    if process_state().is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_config(config, out / "config.yaml")
    torch.manual_seed(config.seed)
    return out


def save_checkpoint(folder: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write `state` (state dicts, numbers, lists) atomically: a kill mid-write keeps the last one."""
    with atomic_path(Path(folder) / CHECKPOINT) as tmp:
        torch.save(state, tmp)


def load_checkpoint(folder: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(folder) / CHECKPOINT
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain data only


def machine() -> str:
    """Where a run or benchmark ran, for its card: the GPU too when torch sees one (a card that
    named only the host's CPU threads hid that its run was trained on a lent H100)."""
    used = torch.get_num_threads()  # fewer than the machine's under OMP_NUM_THREADS, beside another job
    threads = f"{os.cpu_count()} CPU threads" + (f" (torch used {used})" if used != os.cpu_count() else "")
    where = f"{platform.machine()}, {threads}, torch {torch.__version__}"
    return f"{torch.cuda.get_device_name(0)}; {where}" if torch.cuda.is_available() else where


def write_card(folder: str | os.PathLike, title: str, command: str, config, metrics: dict[str, Any],
               steps: int, seconds: float, notes: str = "") -> None:
    """The model card: how these weights were made and what they reached."""
    text = "\n".join([
        f"# {title}", "",
        "## How it was trained", "",
        f"Command: `{command}`", "",
        f"Steps: {steps}. Wall time: {seconds / 60:.1f} min on {machine()}.", "",
        "Config:", "", "```yaml", yaml.safe_dump(dataclasses.asdict(config), sort_keys=False).strip(), "```", "",
        "## Metrics", "", "```json", json.dumps(metrics, indent=2), "```", "",
        notes,
    ])
    with atomic_path(Path(folder) / "README.md") as tmp:
        tmp.write_text(text)
