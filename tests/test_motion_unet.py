"""Stages 2 and 3 on any of our UNets: the tiny 4x recipes add the prompt's sentence vector to the
timestep embedding and give the outer level text-only attention, which diffusers' inflation
(`UNetMotionModel.from_unet2d`) and `ControlNetModel.from_unet` do not carry by themselves."""

import pytest
import torch
from diffusers import ControlNetModel, MotionAdapter
from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0

from magicvideo.diffusion.video import controlnet_from_unet, motion_unet, spatial_config
from magicvideo.stages.i2v import ImageToVideo
from magicvideo.text import sentence_vector
from tiny_components import tiny_i2v, tiny_unet, tiny_v2v, tiny_vae


def _adapter() -> MotionAdapter:
    """A motion adapter whose modules add nothing (their output projections zero, as AnimateDiff starts them)."""
    adapter = MotionAdapter(block_out_channels=(32, 64), motion_layers_per_block=1, motion_num_attention_heads=2,
                            motion_norm_num_groups=32, use_motion_mid_block=False)
    for name, p in adapter.named_parameters():
        if "proj_out" in name:
            torch.nn.init.zeros_(p)
    return adapter


def test_inflated_unet_computes_the_2d_unet_on_every_frame(text):
    unet = tiny_unet(text.dim, pooled=True).eval()
    motion = motion_unet(unet, _adapter()).eval()
    x, hidden = torch.randn(1, 4, 3, 8, 8), torch.randn(1, 5, text.dim)
    pooled, per_frame = sentence_vector(hidden), hidden.repeat(3, 1, 1)  # the motion UNet: text per frame
    with torch.no_grad():
        video = motion(x, 500, encoder_hidden_states=per_frame, timestep_cond=pooled).sample
        for f in range(3):
            frame = unet(x[:, :, f], 500, encoder_hidden_states=hidden, timestep_cond=pooled).sample
            torch.testing.assert_close(video[:, :, f], frame, atol=1e-5, rtol=1e-5)
        # the sentence vector and the text-only level's attention both act
        assert not torch.allclose(motion(x, 500, encoder_hidden_states=per_frame).sample, video)
        assert not torch.allclose(motion(x, 500, encoder_hidden_states=per_frame * 0, timestep_cond=pooled).sample,
                                  video)
    assert spatial_config(motion)["only_cross_attention"] == (True, False)
    assert spatial_config(motion)["time_cond_proj_dim"] == text.dim


def test_controlnet_copies_the_unet_without_its_sentence_projection(text):
    unet = tiny_unet(text.dim, pooled=True)
    cn = controlnet_from_unet(unet, conditioning_embedding_out_channels=(8, 16, 16, 32))
    assert tuple(cn.config.only_cross_attention) == (True, False)
    torch.testing.assert_close(cn.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_k.weight,
                               unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_k.weight)
    torch.testing.assert_close(cn.time_embedding.linear_1.weight, unet.time_embedding.linear_1.weight)
    assert cn.time_embedding.cond_proj is None
    plain = tiny_unet(text.dim)  # a UNet without the extras: diffusers' own copy, unchanged
    torch.manual_seed(3)
    ours = controlnet_from_unet(plain)
    torch.manual_seed(3)  # the new parts (the condition embedding) start from the same draw
    theirs = ControlNetModel.from_unet(plain)
    for (k, a), (_, b) in zip(ours.state_dict().items(), theirs.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_stage_on_a_pooled_text_only_unet_samples_saves_and_loads(text, tmp_path):
    stage = tiny_i2v(text, pooled=True)
    # the image branch reaches the text-only level's attn1 too, which is handed the text; not a self-attention
    branch = {n for n, p in stage.unet.attn_processors.items() if isinstance(p, IPAdapterAttnProcessor2_0)}
    assert "down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor" in branch
    assert "down_blocks.1.attentions.0.transformer_blocks.0.attn1.processor" not in branch
    ref, prompt = torch.rand(3, 32, 32), "a red circle moving left over a meadow"
    frames = stage(prompt, ref, seed=1).frames
    assert frames.shape == (1, 3, 3, 32, 32)
    assert not torch.allclose(stage("a blue star spinning over a sunset", ref, seed=1).frames, frames)
    stage.save_pretrained(tmp_path / "i2v")
    again = ImageToVideo.from_pretrained(tmp_path / "i2v")
    torch.testing.assert_close(again(prompt, ref, seed=1).frames, frames)
    up = tiny_v2v(stage)(prompt, frames, torch.rand(3, 64, 64), seed=1).frames  # stage 3 shares the backbone
    assert up.shape == (1, 3, 3, 64, 64)


def test_a_new_stage_2_starts_as_its_image_unet_on_every_frame(text):
    from magicvideo.training.i2v import I2VTrainConfig, build_stage

    unet = tiny_unet(text.dim, pooled=True).eval()
    config = I2VTrainConfig(appearance=False, controlnet=False, motion_heads=2)
    stage = build_stage(config, unet, tiny_vae(levels=3), text)
    x, hidden = torch.randn(1, 4, 3, 8, 8), torch.randn(1, 5, text.dim)
    pooled = sentence_vector(hidden)
    with torch.no_grad():
        video = stage.unet(x, 300, encoder_hidden_states=hidden.repeat(3, 1, 1), timestep_cond=pooled).sample
        frame = unet(x[:, :, 2], 300, encoder_hidden_states=hidden, timestep_cond=pooled).sample
    torch.testing.assert_close(video[:, :, 2], frame, atol=1e-5, rtol=1e-5)
    assert any(p.requires_grad for n, p in stage.unet.named_parameters() if "motion_modules" in n)
    # a ControlNet whose condition embedding misses the VAE's latent grid is refused before any work
    with pytest.raises(ValueError, match=r"downsample 8x, but the VAE's latents are 4x: give 3 widths"):
        build_stage(I2VTrainConfig(controlnet_channels=(8, 16, 16, 32)), unet, tiny_vae(levels=3), text)
