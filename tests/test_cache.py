import pytest
import torch
from diffusers.models.attention_processor import Attention

import magicvideo.diffusion.video as video
from magicvideo.diffusion.cache import StepCache, constant_projections
from magicvideo.errors import MagicVideoError
from magicvideo.settings import I2VSettings, T2ISettings
from magicvideo.stages.t2i import DiffusersTextToImage, TextToImage
from magicvideo.text import MiniLMTextEncoder
from tiny_components import tiny_i2v, tiny_sd_pipeline, tiny_unet, tiny_v2v, tiny_vae

PROMPT = "a red circle moving left over a meadow"


class _NoCache:
    """StepCache's interface, caching nothing: the loop as it was without it."""

    def __init__(self, *args):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def step(self, index):
        pass


def _count(module: torch.nn.Module) -> list[int]:
    calls = [0]
    module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def _clean(module: torch.nn.Module) -> bool:
    return not hasattr(module, "_diffusers_hook") and "forward" not in module.__dict__


@pytest.mark.parametrize("context_length", [0, 2])  # one window, and two windows a step
def test_interval_one_is_exact_and_computes_the_constant_parts_once(text, monkeypatch, context_length):
    stage = tiny_i2v(text)
    stage.settings.steps = 3
    ref = torch.rand(3, 32, 32)
    embedded = _count(stage.controlnet.controlnet_cond_embedding.conv_in)
    cross = [m for m in stage.unet.modules() if isinstance(m, Attention) and m.is_cross_attention]
    key, image_key = cross[0].to_k, cross[0].processor.to_k_ip[0]  # the prompt's keys, the image's
    computed = {key: [0], image_key: [0]}  # a forward hook would count the cached calls too
    linear = torch.nn.Linear.forward

    def counted(self, *args, **kwargs):
        computed.get(self, [0])[0] += 1
        return linear(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Linear, "forward", counted)
    keys, image_keys = computed[key], computed[image_key]
    own = [p for p in constant_projections(stage.unet) if p not in (key, image_key)]
    cached = stage(PROMPT, ref, seed=1, context_length=context_length, context_stride=1).frames
    windows = 1 if context_length == 0 else 2
    assert embedded[0] == keys[0] == image_keys[0] == windows  # on the first step only, once per window
    assert own  # others too, e.g. the value projections
    monkeypatch.setattr(video, "StepCache", _NoCache)
    plain = stage(PROMPT, ref, seed=1, context_length=context_length, context_stride=1).frames
    assert embedded[0] == keys[0] == windows + 3 * windows
    assert torch.equal(cached, plain)
    assert all(_clean(m) for m in stage.controlnet.modules()) and all(_clean(m) for m in stage.unet.modules())


def test_interval_two_computes_the_deep_levels_every_other_step(text):
    stage = tiny_i2v(text)
    stage.settings.steps = 4
    ref = torch.rand(3, 32, 32)
    full = stage(PROMPT, ref, seed=1).frames
    deep = _count(stage.unet.up_blocks[0].resnets[0])
    outer = _count(stage.unet.up_blocks[-1].resnets[0])
    control_deep = _count(stage.controlnet.down_blocks[1].resnets[0])
    control_outer = _count(stage.controlnet.down_blocks[0].resnets[0])
    reused = stage(PROMPT, ref, seed=1, cache_interval=2).frames
    assert (deep[0], outer[0]) == (2, 4)  # steps 0 and 2 in full; 1 and 3 only the outermost level
    assert (control_deep[0], control_outer[0]) == (2, 4)
    assert reused.shape == full.shape and torch.isfinite(reused).all()
    assert not torch.equal(reused, full)  # an approximation, not the same computation
    assert all(_clean(m) for m in stage.unet.modules())
    assert torch.equal(stage(PROMPT, ref, seed=1).frames, full)  # nothing left behind for the next call


def test_v2v_reuses_too(text):
    i2v = tiny_i2v(text)
    stage = tiny_v2v(i2v)
    clip, ref = torch.rand(3, 3, 32, 32), torch.rand(3, 32, 32)
    stage.settings.strength = 1.0
    deep = _count(stage.unet.up_blocks[0].resnets[0])
    stage(PROMPT, clip, ref, seed=0, cache_interval=2)
    assert deep[0] == 1  # two steps: the first in full, the second reusing it


def test_bad_interval_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        StepCache(torch.nn.Module(), None, interval=0)
    with pytest.raises(MagicVideoError, match=r"cache interval must be in \[1, 10\]"):
        I2VSettings().merged(cache_interval=0)


def test_stage_one_reuses_in_its_loop_and_in_a_diffusers_pipelines(tmp_path):
    ours = TextToImage(tiny_unet(384), tiny_vae(levels=4), MiniLMTextEncoder.from_pretrained(),
                       T2ISettings(size=32, steps=4))
    theirs = DiffusersTextToImage.from_pretrained(tiny_sd_pipeline(tmp_path), steps=4)
    for stage, unet in [(ours, ours.unet), (theirs, theirs.pipeline.unet)]:
        full = stage("a red circle", seed=3, size=32).images
        deep, outer = _count(unet.up_blocks[0].resnets[0]), _count(unet.up_blocks[-1].resnets[0])
        reused = stage("a red circle", seed=3, size=32, cache_interval=2).images
        assert (deep[0], outer[0]) == (2, 4)  # one call a step (both guidance branches in its batch)
        assert not torch.equal(reused, full) and all(_clean(m) for m in unet.modules())


def test_a_forward_wrapped_before_stays_wrapped(text):
    """Whatever wrapped a model's forward before (accelerate's CPU offload does) is there after."""
    stage = tiny_i2v(text)
    inner, calls = stage.unet.forward, []

    def wrapped(*args, **kwargs):
        calls.append(1)
        return inner(*args, **kwargs)

    stage.unet.forward = wrapped
    stage(PROMPT, torch.rand(3, 32, 32), cache_interval=2)
    assert stage.unet.__dict__["forward"] is wrapped and len(calls) == 2  # both steps went through it
    assert not hasattr(stage.unet, "_diffusers_hook")


def test_a_call_of_another_shape_is_computed_afresh():
    """A loop whose batch changes between steps (guidance on some steps only) reuses nothing of
    another shape's: such a step equals the UNet's plain output."""
    unet = tiny_unet(16).eval()
    text = torch.randn(2, 5, 16)
    x, t = torch.randn(2, 4, 8, 8), torch.tensor(500)
    with torch.no_grad(), StepCache(unet, None, interval=2) as cache:
        cache.step(0)
        unet(x, t, encoder_hidden_states=text)
        cache.step(1)  # a reusing step, one item: nothing kept fits it
        one = unet(x[:1], t, encoder_hidden_states=text[:1]).sample
    with torch.no_grad():
        assert torch.equal(one, unet(x[:1], t, encoder_hidden_states=text[:1]).sample)
