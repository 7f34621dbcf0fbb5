"""The shared training loop and the stage-1 trainers, at toy sizes: they run, save loadable
weights with a card, and a killed run resumes to the same weights as an uninterrupted one."""

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import load_file

from magicvideo.training.t2i import T2ITrainConfig, train_t2i
from magicvideo.training.vae import VAETrainConfig, train_vae


def _vae_config(steps: int) -> VAETrainConfig:
    return VAETrainConfig(samples=12, size=32, crop=16, batch_size=4, steps=steps, warmup=1, checkpoint_every=2,
                          widths=(16, 16, 16, 16), eval_frames=2)


def test_vae_trainer_resumes_to_the_same_weights(tmp_path):
    straight = train_vae(_vae_config(4), tmp_path / "a", progress=False)
    train_vae(_vae_config(2), tmp_path / "b", progress=False)  # "killed" after two steps
    resumed = train_vae(_vae_config(4), tmp_path / "b", progress=False)
    a = load_file(straight / "diffusion_pytorch_model.safetensors")
    b = load_file(resumed / "diffusion_pytorch_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    vae = AutoencoderKL.from_pretrained(straight)
    assert vae.config.scaling_factor != 0.18215  # measured on the data, not SD's constant
    card = (straight / "README.md").read_text()
    assert "psnr_128" in card and "Steps: 4" in card


def test_vae_decoder_fine_tune_keeps_the_latent_space(tmp_path):
    from dataclasses import replace

    base = train_vae(_vae_config(2), tmp_path / "base", progress=False)
    tuned = train_vae(replace(_vae_config(3), init=str(base), train_encoder=False), tmp_path / "tuned", progress=False)
    a, b = AutoencoderKL.from_pretrained(base), AutoencoderKL.from_pretrained(tuned)
    assert a.config.scaling_factor == b.config.scaling_factor
    sa, sb = a.state_dict(), b.state_dict()
    for k in sa:
        same = torch.equal(sa[k], sb[k])
        assert same == (k.startswith("encoder.") or k.startswith("quant_conv.")), k


def test_t2i_trainer_runs_and_saves_a_loadable_unet(tmp_path):
    vae = train_vae(_vae_config(2), tmp_path / "vae", progress=False)
    config = T2ITrainConfig(samples=8, size=32, vae=str(vae), batch_size=4, steps=3, warmup=1, checkpoint_every=2,
                            widths=(32, 64), head_dim=16, eval_prompts=2)
    final = train_t2i(config, tmp_path / "t2i", progress=False)
    unet = UNet2DConditionModel.from_pretrained(final)
    assert unet.config.cross_attention_dim == 384 and unet.config.sample_size == 4
    assert "Steps: 3" in (final / "README.md").read_text()


def test_i2v_trainer_joint_batches_resume_and_load(tmp_path):
    from magicvideo.stages.i2v import ImageToVideo
    from magicvideo.training.i2v import I2VTrainConfig, train_i2v
    from tiny_components import tiny_unet, tiny_vae

    tiny_unet(384).save_pretrained(tmp_path / "unet")
    tiny_vae(levels=4).save_pretrained(tmp_path / "vae")

    def config(steps):
        return I2VTrainConfig(clips=3, frames=3, size=32, t2i_unet=str(tmp_path / "unet"), vae=str(tmp_path / "vae"),
                              batch_size=2, image_batch_size=3, image_every=2, steps=steps, warmup=1,
                              checkpoint_every=2, motion_heads=2, appearance_grid=2, appearance_widths=(8, 16),
                              controlnet_channels=(8, 16, 16, 32))

    straight = train_i2v(config(4), tmp_path / "a", progress=False)
    train_i2v(config(2), tmp_path / "b", progress=False)
    resumed = train_i2v(config(4), tmp_path / "b", progress=False)
    a, b = ImageToVideo.from_pretrained(straight), ImageToVideo.from_pretrained(resumed)
    ref = torch.rand(3, 32, 32)
    out = a("a red circle", ref, steps=2).frames
    assert out.shape == (1, 3, 3, 32, 32)
    assert torch.equal(out, b("a red circle", ref, steps=2).frames)
    frozen = UNet2DConditionModel.from_pretrained(tmp_path / "unet").state_dict()
    saved = UNet2DConditionModel.from_pretrained(straight / "unet").state_dict()
    assert all(torch.equal(frozen[k], saved[k]) for k in frozen)  # the spatial UNet did not move
