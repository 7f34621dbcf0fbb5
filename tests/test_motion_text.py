"""Motion text attention: the caption branch inside the motion modules (models/motion_text.py)."""

import pytest
import torch
from safetensors.torch import load_file

from magicvideo.models.motion_text import (
    MotionTextAttnProcessor,
    attach_motion_text,
    detach_motion_text,
    motion_text_processors,
    set_motion_text_scale,
)
from magicvideo.stages.i2v import MOTION_TEXT_FILE, ImageToVideo
from tiny_components import tiny_i2v, tiny_unet

PROMPT = "a red square moves left over a meadow"


def _randomise(processors) -> None:
    torch.manual_seed(5)
    for p in processors.parameters():
        torch.nn.init.normal_(p, std=0.1)


def test_a_new_branch_changes_nothing_and_scale_zero_removes_a_trained_one(text):
    stage, ref = tiny_i2v(text), torch.rand(3, 32, 32)
    base = stage(PROMPT, ref, seed=2).frames
    branch = attach_motion_text(stage.unet, text.dim)
    assert len(branch) == len(motion_text_processors(stage.unet)) > 0
    assert not any(p.to_v_text.weight.any() for p in branch)  # values start at zero
    torch.testing.assert_close(stage(PROMPT, ref, seed=2).frames, base)
    _randomise(branch)
    tuned = stage(PROMPT, ref, seed=2).frames
    assert (tuned - base).abs().max() > 1e-3
    # the branch reads the caption: another motion word, another video
    assert (stage(PROMPT.replace("left", "right"), ref, seed=2).frames - tuned).abs().max() > 1e-3
    torch.testing.assert_close(stage(PROMPT, ref, seed=2, motion_text_scale=0.0).frames, base)
    stage.settings.motion_text_scale = 0.0  # the stage's default, as stage.json sets it
    torch.testing.assert_close(stage(PROMPT, ref, seed=2).frames, base)
    torch.testing.assert_close(stage(PROMPT, ref, seed=2, motion_text_scale=1.0).frames, tuned)
    detach_motion_text(stage.unet)
    assert not motion_text_processors(stage.unet)
    torch.testing.assert_close(stage(PROMPT, ref, seed=2).frames, base)
    with pytest.raises(ValueError, match="no motion text attention"):
        stage(PROMPT, ref, motion_text_scale=0.5)


def test_each_clip_of_a_batch_reads_its_own_caption(text):
    stage, ref = tiny_i2v(text), torch.rand(3, 32, 32)
    _randomise(attach_motion_text(stage.unet, text.dim))
    other = "a blue star grows over a sunset"
    both = stage([PROMPT, other], ref, seed=[3, 4]).frames
    torch.testing.assert_close(both[:1], stage(PROMPT, ref, seed=3).frames, atol=1e-5, rtol=0)
    torch.testing.assert_close(both[1:], stage(other, ref, seed=4).frames, atol=1e-5, rtol=0)


def test_save_and_load_round_trip_keeps_the_branch_apart_from_the_motion_adapter(text, tmp_path):
    stage, ref = tiny_i2v(text), torch.rand(3, 32, 32)
    _randomise(attach_motion_text(stage.unet, text.dim))
    stage.save_pretrained(tmp_path / "i2v")
    adapter = load_file(tmp_path / "i2v" / "motion_adapter" / "diffusion_pytorch_model.safetensors")
    assert adapter and not any("processor" in k for k in adapter)
    assert (tmp_path / "i2v" / MOTION_TEXT_FILE).is_file()
    again = ImageToVideo.from_pretrained(tmp_path / "i2v")
    assert len(motion_text_processors(again.unet)) == len(motion_text_processors(stage.unet))
    torch.testing.assert_close(again(PROMPT, ref).frames, stage(PROMPT, ref).frames)


def test_errors(text):
    with pytest.raises(ValueError, match="no motion modules"):
        attach_motion_text(tiny_unet(text.dim), text.dim)
    with pytest.raises(ValueError, match="attach_motion_text first"):
        set_motion_text_scale(tiny_i2v(text).unet, 0.5)
    stage = tiny_i2v(text)
    attn = next(m for n, m in stage.unet.named_modules() if n.endswith("motion_modules.0.transformer_blocks.0.attn1"))
    processor = MotionTextAttnProcessor(attn.inner_dim, text.dim)
    processor.text = torch.zeros(3, 4, text.dim)
    with pytest.raises(ValueError, match="3 clips"):
        processor(attn, torch.zeros(4, 2, attn.inner_dim))
