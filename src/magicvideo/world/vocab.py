"""The vocabulary of the synthetic world: attributes, their words, caption templates, splits.

Everything a caption can say lives here, so the caption writer and the judge's prompt
parser read the same tables. The held-out parts (combinations, templates, synonyms) are
fixed literals, not drawn at import time, so they never move between versions.
"""

from __future__ import annotations

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "heart")

# Object colours, RGB in [0, 1]. Vivid on purpose: every background is kept far from
# all of them in Lab (see tests/test_render.py), which is what lets the judge segment.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.10, 0.10),
    "orange": (1.00, 0.55, 0.00),
    "yellow": (1.00, 0.92, 0.10),
    "green": (0.10, 0.75, 0.15),
    "blue": (0.10, 0.25, 0.95),
    "purple": (0.55, 0.15, 0.80),
    "pink": (1.00, 0.45, 0.75),
    "white": (1.00, 1.00, 1.00),
}

BACKGROUNDS: tuple[str, ...] = ("night sky", "blue sky", "sunset", "meadow")

MOTIONS: tuple[str, ...] = (
    "moves left",
    "moves right",
    "moves up",
    "moves down",
    "grows",
    "shrinks",
    "spins",
    "stays still",
)

# A spinning circle looks exactly like a still one, so the world never draws it.
INVALID_COMBINATIONS: frozenset[tuple[str, str]] = frozenset({("circle", "spins")})

# 36 of the 312 valid (shape, colour, motion) combinations (11.5%), drawn once with
# numpy's default_rng(20240108) and frozen here. No train clip contains any of them;
# every heldout clip has at least one.
HELDOUT_COMBINATIONS: frozenset[tuple[str, str, str]] = frozenset(
    {
        ("circle", "red", "moves down"),
        ("circle", "orange", "stays still"),
        ("circle", "green", "moves right"),
        ("circle", "green", "moves up"),
        ("circle", "green", "shrinks"),
        ("circle", "purple", "grows"),
        ("circle", "purple", "shrinks"),
        ("circle", "pink", "moves up"),
        ("circle", "pink", "shrinks"),
        ("circle", "white", "grows"),
        ("circle", "white", "stays still"),
        ("square", "red", "shrinks"),
        ("square", "yellow", "moves left"),
        ("square", "green", "grows"),
        ("square", "blue", "shrinks"),
        ("square", "blue", "spins"),
        ("square", "purple", "stays still"),
        ("square", "white", "moves right"),
        ("triangle", "red", "moves left"),
        ("triangle", "red", "moves down"),
        ("triangle", "orange", "stays still"),
        ("triangle", "yellow", "moves left"),
        ("triangle", "yellow", "moves right"),
        ("triangle", "blue", "shrinks"),
        ("triangle", "purple", "moves left"),
        ("star", "green", "moves down"),
        ("star", "green", "stays still"),
        ("star", "blue", "moves up"),
        ("star", "white", "moves left"),
        ("star", "white", "moves up"),
        ("heart", "red", "moves down"),
        ("heart", "red", "shrinks"),
        ("heart", "red", "spins"),
        ("heart", "orange", "grows"),
        ("heart", "blue", "stays still"),
        ("heart", "purple", "moves down"),
    }
)

# Words for each attribute value; the first is the canonical one. The last word of each
# list is held out: it appears only in heldout captions.
SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disc", "ball", "orb"),
    "square": ("square", "box", "block", "tile"),
    "triangle": ("triangle", "triangular shape", "wedge"),
    "star": ("star", "five-pointed star", "star shape"),
    "heart": ("heart", "heart shape", "love heart"),
}
COLOUR_WORDS: dict[str, tuple[str, ...]] = {
    "red": ("red", "crimson", "scarlet"),
    "orange": ("orange", "tangerine", "amber"),
    "yellow": ("yellow", "golden", "lemon"),
    "green": ("green", "emerald", "lime"),
    "blue": ("blue", "azure", "cobalt"),
    "purple": ("purple", "violet", "plum"),
    "pink": ("pink", "rose", "rosy"),
    "white": ("white", "snowy", "ivory"),
}
BACKGROUND_WORDS: dict[str, tuple[str, ...]] = {
    "night sky": ("the night sky", "a starry night sky", "a dark starlit sky"),
    "blue sky": ("a blue sky", "a clear blue sky", "a bright daytime sky"),
    "sunset": ("a sunset", "a sunset sky", "an evening glow"),
    "meadow": ("a meadow", "a grassy field", "an open pasture"),
}
# (finite, participle) pairs, so templates can say "moves left" or "moving left".
MOTION_WORDS: dict[str, tuple[tuple[str, str], ...]] = {
    "moves left": (
        ("moves left", "moving left"),
        ("drifts to the left", "drifting to the left"),
        ("slides leftward", "sliding leftward"),
        ("travels to the left", "travelling to the left"),
    ),
    "moves right": (
        ("moves right", "moving right"),
        ("drifts to the right", "drifting to the right"),
        ("slides rightward", "sliding rightward"),
        ("glides to the right", "gliding to the right"),
    ),
    "moves up": (
        ("moves up", "moving up"),
        ("rises", "rising"),
        ("floats upward", "floating upward"),
        ("climbs upward", "climbing upward"),
    ),
    "moves down": (
        ("moves down", "moving down"),
        ("sinks", "sinking"),
        ("falls downward", "falling downward"),
        ("drops down", "dropping down"),
    ),
    "grows": (
        ("grows", "growing"),
        ("expands", "expanding"),
        ("gets bigger", "getting bigger"),
        ("swells", "swelling"),
    ),
    "shrinks": (
        ("shrinks", "shrinking"),
        ("contracts", "contracting"),
        ("gets smaller", "getting smaller"),
        ("dwindles", "dwindling"),
    ),
    "spins": (
        ("spins", "spinning"),
        ("rotates", "rotating"),
        ("twirls", "twirling"),
        ("whirls around", "whirling around"),
    ),
    "stays still": (
        ("stays still", "staying still"),
        ("remains motionless", "remaining motionless"),
        ("hovers in place", "hovering in place"),
        ("does not move", "not moving"),
    ),
}

# {F}: finite clauses ("a red circle moves left"), {P}: participle clauses ("a red
# circle moving left"); two objects are joined with " and ". {bg}: a background phrase.
TRAIN_TEMPLATES: tuple[str, ...] = (
    "{P} over {bg}",
    "{F} over {bg}",
    "a video of {P} over {bg}",
    "{F} against {bg}",
    "{bg} with {P}",
    "in front of {bg}, {F}",
    "a clip of {P} in front of {bg}",
    "an animation of {P} against {bg}",
    "{P}, with {bg} in the background",
    "footage of {P} above {bg}",
)
HELDOUT_TEMPLATES: tuple[str, ...] = (
    "a short film showing {P} over {bg}",
    "{F} while {bg} fills the background",
    "a scene where {F} before {bg}",
)


def train_words(table: dict) -> dict:
    """The words of `table` that train captions may use (all but the held-out last one)."""
    return {key: words[:-1] for key, words in table.items()}


def heldout_words(table: dict) -> dict:
    """The held-out word of each entry of `table`, as a one-element tuple."""
    return {key: words[-1:] for key, words in table.items()}


def is_heldout_combination(shape: str, colour: str, motion: str) -> bool:
    return (shape, colour, motion) in HELDOUT_COMBINATIONS
