"""Caches of what frozen encoders make of the training data: computed once per run folder,
written atomically, so that a resumed run reuses them and the loop never runs the encoders."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from magicvideo.media import atomic_path
from magicvideo.text import TextEncoder
from magicvideo.world import draw_clip


def cached(path: str | Path, make: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The tensors cached at `path` (read as tensors only), or make() saved there first."""
    path = Path(path)
    if path.is_file():
        return torch.load(path, weights_only=True)
    value = make()
    with atomic_path(path) as tmp:
        torch.save(value, tmp)
    return value


def in_workers(fn: Callable[[Any], Any], jobs: Iterable[Any], workers: int) -> Iterator[Any]:
    """fn over jobs, results in order: in `workers` processes (the world renders on the CPU, one
    core each), or in this one when workers is 0."""
    if workers <= 0:
        yield from map(fn, jobs)
        return
    # spawned, not forked: the parent may hold a CUDA context, which a fork must not inherit. One
    # thread per worker, set in the workers only: this process keeps its threads for the loop.
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=torch.set_num_threads,
                             initargs=(1,)) as pool:
        yield from pool.map(fn, jobs)


@torch.no_grad()
def encode_captions(text: TextEncoder, seed: int, count: int, split: str = "train",
                    progress: bool = True) -> dict[str, torch.Tensor]:
    """Text states (fp16) of the captions of clips 0..count-1 of (seed, split), and the empty
    prompt's (what caption dropout puts in their place)."""
    hidden = torch.empty(count, text.max_tokens, text.dim, dtype=torch.float16)
    batch = 256
    for start in tqdm(range(0, count, batch), desc=f"encode {split} captions", disable=not progress):
        stop = min(start + batch, count)
        hidden[start:stop] = text([draw_clip(seed, split, i).caption for i in range(start, stop)]).hidden.half()
    return {"hidden": hidden, "empty_hidden": text.empty().hidden[0].half().cpu()}
