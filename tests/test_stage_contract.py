"""One contract for all four stages (as diffusers' PipelineTesterMixin holds one for its pipelines):
a Settings dataclass and an Output, a batch that gives each item what it gives alone, a
save/load round trip, `place`, determinism, and bad input refused in one line before any work.
Each stage is tiny and random-init; only the calls differ, so each case says how to call it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from magicvideo.device import Placement
from magicvideo.models.edsc import EDSCInterpolator
from magicvideo.models.ifnet import IFNet
from magicvideo.stages.i2v import ImageToVideo
from magicvideo.stages.t2i import T2ISettings, TextToImage
from magicvideo.stages.v2v import VideoToVideo
from magicvideo.stages.vfi import FrameInterpolator
from magicvideo.text import MiniLMTextEncoder
from tiny_components import tiny_i2v, tiny_unet, tiny_v2v, tiny_vae

PROMPTS = ["a red circle moving left over a meadow", "a blue star spinning over a sunset"]


@dataclass
class Case:
    make: Callable[[], Any]
    run: Callable[[Any, list[int]], torch.Tensor]  # the stage on items `ids` of PROMPTS, seed = id
    load: Callable[[Any, Any], Any]  # (saved folder, the stage it was saved from) -> the stage again
    bad: Callable[[Any], Any]  # a call that must be refused


def _refs(ids: list[int]) -> torch.Tensor:
    return torch.stack([torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in ids])


def _clips(ids: list[int], size: int = 32) -> torch.Tensor:
    return torch.stack([torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(10 + i)) for i in ids])


@pytest.fixture(scope="module")
def text():
    return MiniLMTextEncoder.from_pretrained()


def cases(text) -> dict[str, Case]:
    def t2i():
        return TextToImage(tiny_unet(text.dim), tiny_vae(levels=4), text, T2ISettings(size=32, steps=2))

    def i2v():
        return tiny_i2v(text)

    def edsc():
        torch.manual_seed(3)
        model = EDSCInterpolator(widths=(8, 16, 16))
        for p in model.parameters():  # its head starts at zero (exactly IFNet): make it act
            torch.nn.init.normal_(p, std=0.02)
        return FrameInterpolator("edsc", IFNet.from_rife_package(), model)

    return {
        "t2i": Case(t2i, lambda s, ids: s([PROMPTS[i] for i in ids], seed=ids).images,
                    lambda path, s: TextToImage.from_pretrained(path),
                    lambda s: s(PROMPTS[0], steps=0)),
        "i2v": Case(i2v, lambda s, ids: s([PROMPTS[i] for i in ids], _refs(ids), seed=ids).frames,
                    lambda path, s: ImageToVideo.from_pretrained(path),
                    lambda s: s(PROMPTS[0], torch.rand(4, 32, 32))),
        "v2v": Case(lambda: tiny_v2v(i2v()),
                    lambda s, ids: s([PROMPTS[i] for i in ids], _clips(ids), _refs(ids), seed=ids).frames,
                    lambda path, s: VideoToVideo.from_pretrained(path, s.i2v),
                    lambda s: s(PROMPTS[0], _clips([0]), _refs([0]), strength=2.0)),
        "vfi": Case(edsc, lambda s, ids: s(_clips(ids), times=2).frames,
                    lambda path, s: FrameInterpolator.from_pretrained(path, method="edsc"),
                    lambda s: s(_clips([0]), times=0)),
    }


NAMES = ("t2i", "i2v", "v2v", "vfi")


@pytest.fixture(scope="module")
def built(text):
    return {name: (case, case.make()) for name, case in cases(text).items()}


@pytest.mark.parametrize("name", NAMES)
def test_a_stage_has_settings_and_is_deterministic(built, name):
    case, stage = built[name]
    assert dataclasses.is_dataclass(stage.settings)
    first = case.run(stage, [0])
    assert first.dtype == torch.float32 and 0 <= first.min() and first.max() <= 1
    torch.testing.assert_close(case.run(stage, [0]), first, atol=0, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_a_batch_gives_each_item_what_it_gives_alone(built, name):
    case, stage = built[name]
    both = case.run(stage, [0, 1])
    torch.testing.assert_close(both[1:], case.run(stage, [1]), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_save_and_load_give_the_same_stage(built, name, tmp_path):
    case, stage = built[name]
    stage.save_pretrained(tmp_path / name)
    again = case.load(tmp_path / name, stage)
    assert again.settings == stage.settings
    torch.testing.assert_close(case.run(again, [1]), case.run(stage, [1]), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_place_returns_the_stage_and_keeps_its_output(built, name):
    case, stage = built[name]
    before = case.run(stage, [0])
    assert stage.place(Placement(device="cpu")) is stage
    torch.testing.assert_close(case.run(stage, [0]), before, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_is_refused_in_one_line(built, name):
    case, stage = built[name]
    with pytest.raises(ValueError) as refused:
        case.bad(stage)
    assert "\n" not in str(refused.value) and str(refused.value)
