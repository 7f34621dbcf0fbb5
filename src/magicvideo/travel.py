"""Prompt travel: a prompt per keyframe, `"0: a red star moving left | 24: a red star spinning"`,
the text states interpolated linearly between scheduled frames and held after the last, as
AnimateDiff users' prompt schedules do. Stages 2 and 3 read one prompt embedding per frame."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from magicvideo.errors import PromptError
from magicvideo.text import PromptEmbedding, TextEncoder, is_blank


@dataclass(frozen=True)
class PromptSchedule:
    keys: tuple[tuple[int, str], ...]  # (frame, prompt), the frames rising from 0

    @classmethod
    def parse(cls, text: str) -> PromptSchedule:
        """`"0: prompt | 24: prompt"`, or the path of a JSON file `{"0": "prompt", "24": "prompt"}`."""
        if text.strip().endswith(".json") and Path(text.strip()).is_file():
            try:
                raw = json.loads(Path(text.strip()).read_text())
            except ValueError as err:
                raise PromptError(f"{text.strip()} is not valid JSON ({err})") from None
            if not isinstance(raw, dict):
                raise PromptError(f"{text.strip()} must map frames to prompts, e.g. "
                                  '{"0": "...", "24": "..."}')
            pairs = list(raw.items())
        else:
            pairs = [part.split(":", 1) if ":" in part else (None, part) for part in text.split("|")]
        keys = []
        for frame, prompt in pairs:
            try:
                number = int(str(frame).strip())
            except ValueError:
                raise PromptError(f"each part of a prompt schedule is 'FRAME: prompt'; got {str(prompt).strip()!r} "
                                  "with no frame number") from None
            if not isinstance(prompt, str) or is_blank(prompt):
                raise PromptError(f"the prompt at frame {number} is empty")
            keys.append((number, prompt.strip()))
        keys.sort()
        frames = [f for f, _ in keys]
        if not keys or frames[0] != 0:
            raise PromptError("a prompt schedule starts at frame 0 (its prompt makes the reference image)")
        if len(set(frames)) != len(frames):
            raise PromptError("a prompt schedule names a frame twice")
        return cls(tuple(keys))

    @property
    def prompts(self) -> list[str]:
        return [p for _, p in self.keys]

    def check(self, frames: int) -> None:
        last = self.keys[-1][0]
        if last >= frames:
            raise PromptError(f"the prompt schedule names frame {last}, but the clip has {frames} (0 to {frames - 1})")

    def weights(self, frames: int) -> torch.Tensor:
        """(frames, keys): each frame's mix of the scheduled prompts, linear between two scheduled
        frames, the last prompt held after its frame."""
        self.check(frames)
        at = [f for f, _ in self.keys]
        w = torch.zeros(frames, len(at))
        for i in range(frames):
            k = max(j for j, f in enumerate(at) if f <= i)
            if k == len(at) - 1:
                w[i, k] = 1.0
            else:
                t = (i - at[k]) / (at[k + 1] - at[k])
                w[i, k], w[i, k + 1] = 1 - t, t
        return w

    def embed(self, encoder: TextEncoder, frames: int) -> PromptEmbedding:
        """One embedding per frame (frames rows): the scheduled prompts' states, mixed by `weights`."""
        states = encoder(self.prompts).hidden  # (keys, L, D)
        mixed = torch.einsum("fk,kld->fld", self.weights(frames).to(states), states)
        return PromptEmbedding(mixed)
