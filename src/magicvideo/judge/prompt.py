"""Read the world's attributes back out of a prompt, so the judge can score a video against it.

The parser knows the world's whole vocabulary (every synonym, train and held-out) and the
words of every caption template; it matches the longest phrase at each position. A word
it does not know is an error rather than a guess: a score against a misread prompt would
be worse than none.
"""

from __future__ import annotations

import re

from magicvideo.errors import PromptError
from magicvideo.judge.judge import Expected
from magicvideo.world import vocab

_ARTICLES = ("a ", "an ", "the ")


def _phrase_table() -> dict[tuple[str, ...], tuple[str, str]]:
    table: dict[tuple[str, ...], tuple[str, str]] = {}
    for value, words in vocab.COLOUR_WORDS.items():
        table.update({tuple(w.split()): ("colour", value) for w in words})
    for value, words in vocab.SHAPE_WORDS.items():
        table.update({tuple(w.split()): ("shape", value) for w in words})
    for value, pairs in vocab.MOTION_WORDS.items():
        table.update({tuple(w.split()): ("motion", value) for pair in pairs for w in pair})
    for value, words in vocab.BACKGROUND_WORDS.items():
        for w in words:
            bare = next((w[len(a):] for a in _ARTICLES if w.startswith(a)), w)
            table[tuple(bare.split())] = ("background", value)  # articles are filler
    return table


_PHRASES = _phrase_table()
_LONGEST = max(len(k) for k in _PHRASES)
_FILLER = frozenset(
    word
    for template in vocab.TRAIN_TEMPLATES + vocab.HELDOUT_TEMPLATES
    for word in re.sub(r"\{\w+\}", " ", template).replace(",", " ").split()
) | {"a", "an", "the", "and"}


def _scan(words: list[str], table: dict, longest: int):
    """Yield (entry, None) for the longest phrase of `table` at each position, else (None, word)."""
    i = 0
    while i < len(words):
        for n in range(min(longest, len(words) - i), 0, -1):
            hit = table.get(tuple(words[i : i + n]))
            if hit:
                yield hit, None
                i += n
                break
        else:
            yield None, words[i]
            i += 1


def tokens(prompt: str) -> list[str]:
    return re.sub(r"[,.;:!?]", " ", prompt.lower()).split()


def parse_prompt(prompt: str) -> Expected:
    """The objects (shape, colour, motion) and background a prompt asks for.

    Each object is a colour word followed by a shape word; the motion phrase after it
    belongs to it. Motion and background may be left out (then they are not scored).
    """
    words = tokens(prompt)
    if not words:
        raise PromptError("the prompt is empty")
    found: list[tuple[str, str]] = []
    unknown: list[str] = []
    for hit, word in _scan(words, _PHRASES, _LONGEST):
        if hit:
            found.append(hit)
        elif word not in _FILLER:
            unknown.append(word)
    if unknown:
        raise PromptError(
            f"unknown word(s) in the prompt: {', '.join(repr(w) for w in unknown)}; the judge reads only "
            "the world's vocabulary (see magicvideo.world.vocab)"
        )
    objects: list[list[str | None]] = []
    backgrounds = []
    for k, (kind, value) in enumerate(found):
        if kind == "colour":
            if k + 1 >= len(found) or found[k + 1][0] != "shape":
                raise PromptError(f"the colour {value!r} is not followed by a shape")
            objects.append([found[k + 1][1], value, None])
        elif kind == "shape" and (k == 0 or found[k - 1][0] != "colour"):
            raise PromptError(f"the shape {value!r} has no colour")
        elif kind == "motion":
            if not objects or objects[-1][2] is not None:
                raise PromptError(f"the motion {value!r} does not follow an object")
            objects[-1][2] = value
        elif kind == "background":
            backgrounds.append(value)
    if not objects:
        raise PromptError("the prompt names no object (a colour and a shape, e.g. 'a red circle')")
    if len(set(backgrounds)) > 1:
        raise PromptError(f"the prompt names more than one background: {sorted(set(backgrounds))}")
    return Expected(
        objects=[(o[0], o[1], o[2]) for o in objects],
        background=backgrounds[0] if backgrounds else None,
    )


_MOTION_FORMS = {tuple(w.split()): (value, form) for value, pairs in vocab.MOTION_WORDS.items()
                 for pair in pairs for form, w in enumerate(pair)}
_MOTION_LONGEST = max(len(k) for k in _MOTION_FORMS)


def with_motion(prompt: str, motion: str = "stays still") -> str:
    """The prompt with every motion phrase replaced by `motion`'s first phrasing, in the same form
    ("moves left" -> "stays still", "drifting to the left" -> "staying still"); punctuation is
    dropped. A prompt that names no motion comes back as its words."""
    if motion not in vocab.MOTION_WORDS:
        raise ValueError(f"unknown motion {motion!r}; expected one of {sorted(vocab.MOTION_WORDS)}")
    phrasing = vocab.MOTION_WORDS[motion][0]
    return " ".join(phrasing[hit[1]] if hit else word for hit, word in _scan(tokens(prompt), _MOTION_FORMS,
                                                                             _MOTION_LONGEST))
