"""Shared by the benchmark scripts: write a markdown result file and show it."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def publish(path: str | Path, lines: list[str]) -> None:
    text = "\n".join(lines) + "\n"
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text)
    print(text)


def interval(diffs: np.ndarray, draws: int = 4000) -> tuple[float, float]:
    """95% paired bootstrap interval of the mean of per-item differences (seeded: reruns agree)."""
    rng = np.random.default_rng(0)
    means = np.asarray(diffs)[rng.integers(0, len(diffs), (draws, len(diffs)))].mean(1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def run_snapshots(run: Path, steps: list[int] | None = None) -> list[tuple[int, Path]]:
    """(step, file) of the EMA snapshots a training run kept (`snapshot_every`), only `steps` if
    given; exits with a one-line message when there are none."""
    from magicvideo.training.loop import SNAPSHOTS, kept_snapshots

    found = [(s, p) for s, p in kept_snapshots(Path(run) / "state").items() if not steps or s in steps]
    if not found:
        raise SystemExit(f"no snapshots in {Path(run) / 'state' / SNAPSHOTS} (the run needs snapshot_every > 0)")
    return found
