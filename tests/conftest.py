import pytest
import torch

from magicvideo.text import MiniLMTextEncoder
from magicvideo.world import draw_clip


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def heldout_clips():
    """Twelve heldout clips of the world (scene + caption), drawn once."""
    return [draw_clip(7, "heldout", i) for i in range(12)]


@pytest.fixture(scope="module")
def text():
    """The tiny preset's text encoder (MiniLM, from its installed wheel), loaded once per test file."""
    return MiniLMTextEncoder.from_pretrained()
