"""Shared by the benchmark scripts: write a markdown result file and show it."""

from __future__ import annotations

from pathlib import Path


def publish(path: str | Path, lines: list[str]) -> None:
    text = "\n".join(lines) + "\n"
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text)
    print(text)
