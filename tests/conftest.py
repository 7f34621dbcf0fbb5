import pytest
import torch

from magicvideo.synth import draw_clip


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def heldout_clips():
    """Twelve heldout clips of the world (scene + caption), drawn once."""
    return [draw_clip(7, "heldout", i) for i in range(12)]
