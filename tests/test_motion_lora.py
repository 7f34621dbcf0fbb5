"""Motion LoRA: low-rank updates of the motion modules, saved apart from them (models/motion_lora.py)."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from magicvideo.device import Placement
from magicvideo.models.motion_lora import attach_motion_lora, has_motion_lora, load_motion_lora, motion_lora_parameters
from magicvideo.models.motion_text import attach_motion_text
from magicvideo.stages.i2v import MOTION_LORA_FILE, ImageToVideo
from tiny_components import tiny_i2v, tiny_unet

PROMPT = "a green triangle moves up over a beach"


def _randomise(params) -> None:
    torch.manual_seed(7)
    for p in params:
        torch.nn.init.normal_(p, std=0.2)


def test_a_new_lora_changes_nothing_and_touches_only_the_motion_modules(text):
    stage, ref = tiny_i2v(text), torch.rand(3, 32, 32)
    attach_motion_text(stage.unet, text.dim)  # its processor's own layers must not be wrapped
    base = stage(PROMPT, ref, seed=1).frames
    params = attach_motion_lora(stage.unet, rank=2)
    assert has_motion_lora(stage.unet) and params
    names = [n for n, p in stage.unet.named_parameters() if ".motion_lora." in n]
    assert all("motion_modules" in n and ".processor." not in n for n in names)
    assert any(".attn1.to_q." in n for n in names) and any(".ff.net.2." in n for n in names)
    torch.testing.assert_close(stage(PROMPT, ref, seed=1).frames, base)  # B starts at zero
    _randomise(motion_lora_parameters(stage.unet))
    assert (stage(PROMPT, ref, seed=1).frames - base).abs().max() > 1e-3


def test_round_trip_keeps_the_motion_adapter_as_it_was(text, tmp_path):
    stage, ref = tiny_i2v(text), torch.rand(3, 32, 32)
    stage.save_pretrained(tmp_path / "before")
    attach_motion_lora(stage.unet, rank=3)
    _randomise(motion_lora_parameters(stage.unet))
    stage.save_pretrained(tmp_path / "i2v")
    adapter = "motion_adapter/diffusion_pytorch_model.safetensors"
    before, after = load_file(tmp_path / "before" / adapter), load_file(tmp_path / "i2v" / adapter)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    lora = load_file(tmp_path / "i2v" / MOTION_LORA_FILE)
    assert lora and all("lora_" in k for k in lora)
    again = ImageToVideo.from_pretrained(tmp_path / "i2v")
    assert has_motion_lora(again.unet)
    torch.testing.assert_close(again(PROMPT, ref).frames, stage(PROMPT, ref).frames)
    assert not has_motion_lora(ImageToVideo.from_pretrained(tmp_path / "before").unet)


def test_a_placed_stage_carries_its_motion_lora_fused_with_the_same_frames(text):
    stage, ref = tiny_i2v(text), torch.rand(3, 32, 32)
    attach_motion_lora(stage.unet, rank=2)
    _randomise(motion_lora_parameters(stage.unet))
    before = stage(PROMPT, ref, seed=1).frames
    stage.place(Placement(device="cpu"))
    assert not has_motion_lora(stage.unet) and not any("lora_" in n for n, _ in stage.unet.named_parameters())
    torch.testing.assert_close(stage(PROMPT, ref, seed=1).frames, before, atol=1e-5, rtol=0)


def test_errors(text, tmp_path):
    with pytest.raises(ValueError, match="no motion modules"):
        attach_motion_lora(tiny_unet(text.dim), rank=2)
    stage = tiny_i2v(text)
    with pytest.raises(ValueError, match="at least 1"):
        attach_motion_lora(stage.unet, rank=0)
    attach_motion_lora(stage.unet, rank=2)
    with pytest.raises(ValueError, match="already"):
        attach_motion_lora(stage.unet, rank=2)
    lora = tmp_path / "lora.safetensors"
    save_file({"down_blocks.9.motion_modules.0.proj_in.lora_A.weight": torch.zeros(2, 4)}, lora,
              metadata={"rank": "2", "alpha": "2"})
    with pytest.raises(ValueError, match="does not match"):
        load_motion_lora(tiny_i2v(text).unet, lora)
    save_file({"x": torch.zeros(1)}, lora)
    with pytest.raises(ValueError, match="not a LoRA"):
        load_motion_lora(tiny_i2v(text).unet, lora)
