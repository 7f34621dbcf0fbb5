"""Captions for scenes: templates filled with synonyms, train and held-out phrasings kept apart."""

from __future__ import annotations

import numpy as np

from magicvideo.world import vocab
from magicvideo.world.scene import Scene


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _pick(rng: np.random.Generator, options: tuple) -> object:
    return options[int(rng.integers(len(options)))]


def _choices(split: str) -> tuple[tuple[str, ...], dict, dict, dict, dict]:
    if split == "train":
        return (
            vocab.TRAIN_TEMPLATES,
            vocab.train_words(vocab.SHAPE_WORDS),
            vocab.train_words(vocab.COLOUR_WORDS),
            vocab.train_words(vocab.MOTION_WORDS),
            vocab.train_words(vocab.BACKGROUND_WORDS),
        )
    return (
        vocab.TRAIN_TEMPLATES + vocab.HELDOUT_TEMPLATES,
        vocab.SHAPE_WORDS,
        vocab.COLOUR_WORDS,
        vocab.MOTION_WORDS,
        vocab.BACKGROUND_WORDS,
    )


def _uses_heldout_phrasing(template: str, words: list[tuple[dict, str, object]]) -> bool:
    return template in vocab.HELDOUT_TEMPLATES or any(
        word == table[key][-1] for table, key, word in words
    )


def make_caption(scene: Scene, rng: np.random.Generator, split: str) -> str:
    """A caption of `scene`.

    Train captions use train templates and train words only. Heldout captions draw from
    everything and always contain at least one held-out template or word.
    """
    templates, shapes, colours, motions, backgrounds = _choices(split)
    for _ in range(1000):
        template = str(_pick(rng, templates))
        used: list[tuple[dict, str, object]] = []
        finite, participle = [], []
        for obj in scene.objects:
            colour = _pick(rng, colours[obj.colour])
            shape = _pick(rng, shapes[obj.shape])
            motion = _pick(rng, motions[obj.motion])
            used += [
                (vocab.COLOUR_WORDS, obj.colour, colour),
                (vocab.SHAPE_WORDS, obj.shape, shape),
                (vocab.MOTION_WORDS, obj.motion, motion),
            ]
            noun = _article(f"{colour} {shape}")
            finite.append(f"{noun} {motion[0]}")
            participle.append(f"{noun} {motion[1]}")
        background = str(_pick(rng, backgrounds[scene.background]))
        used.append((vocab.BACKGROUND_WORDS, scene.background, background))
        if split == "train" or _uses_heldout_phrasing(template, used):
            return template.format(
                F=" and ".join(finite), P=" and ".join(participle), bg=background
            )
    raise RuntimeError("could not draw a heldout caption")  # unreachable: p(fail) ~ 0
