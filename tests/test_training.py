"""The shared training loop and the stage-1 trainers, at toy sizes: they run, save loadable
weights with a card, and a killed run resumes to the same weights as an uninterrupted one."""

from dataclasses import replace

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import load_file

from magicvideo.stages.t2i import TextToImage
from magicvideo.training.t2i import LATENTS, T2ITrainConfig, encode_images, export_snapshot, train_t2i
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
    base = train_vae(_vae_config(2), tmp_path / "base", progress=False)
    tuned = train_vae(replace(_vae_config(3), init=str(base), train_encoder=False), tmp_path / "tuned", progress=False)
    a, b = AutoencoderKL.from_pretrained(base), AutoencoderKL.from_pretrained(tuned)
    assert a.config.scaling_factor == b.config.scaling_factor
    sa, sb = a.state_dict(), b.state_dict()
    for k in sa:
        same = torch.equal(sa[k], sb[k])
        assert same == (k.startswith("encoder.") or k.startswith("quant_conv.")), k


def test_vae_batches_pool_the_share_of_whole_frames_asked_for():
    from magicvideo.training.vae import _batch

    frames = torch.zeros(6, 3, 32, 32, dtype=torch.uint8)
    frames[:, :, :16] = 255  # top half white: a whole frame pooled to 16x16 keeps it, a crop need not
    for share, pooled in ((0.5, 2), (0.75, 3), (1.0, 4), (0.0, 0)):
        x, noise = _batch(frames, replace(_vae_config(1), pooled_share=share), 0, (4, 4))
        assert x.shape == (4, 3, 16, 16) and noise.shape == (4, 4, 4, 4)
        whole = x[4 - pooled:]  # the pooled frames come last
        assert torch.equal(whole[:, :, :8], torch.ones_like(whole[:, :, :8]))
        assert torch.equal(whole[:, :, 8:], torch.zeros_like(whole[:, :, 8:]))


def test_an_8x_vae_warm_starts_a_4x_one_through_its_outer_levels(tmp_path):
    from magicvideo.latent import vae_factor
    from magicvideo.training.vae import build_vae, transplant_outer_levels

    eight = build_vae(replace(_vae_config(1), widths=(16, 32, 64, 64)))
    four = build_vae(replace(_vae_config(1), widths=(16, 32, 64)))
    assert (vae_factor(eight), vae_factor(four)) == (8, 4)
    assert transplant_outer_levels(eight, four) == len(four.state_dict())  # every tensor has its counterpart
    a, b = eight.state_dict(), four.state_dict()
    assert torch.equal(b["encoder.conv_in.weight"], a["encoder.conv_in.weight"])
    assert torch.equal(b["decoder.up_blocks.0.resnets.0.conv1.weight"], a["decoder.up_blocks.1.resnets.0.conv1.weight"])
    assert torch.equal(b["decoder.conv_out.weight"], a["decoder.conv_out.weight"])
    try:
        transplant_outer_levels(four, eight)
    except ValueError as e:
        assert "at least as many levels" in str(e)
    else:
        raise AssertionError("a VAE with fewer levels cannot warm-start one with more")


def test_t2i_unet_attention_levels_are_a_setting():
    from magicvideo.training.t2i import build_unet

    unet = build_unet(T2ITrainConfig(widths=(32, 64, 128, 192), attention=(1, 2, 3)), 32)
    assert unet.config.down_block_types == ("DownBlock2D",) + ("CrossAttnDownBlock2D",) * 3
    assert unet.config.up_block_types == ("CrossAttnUpBlock2D",) * 3 + ("UpBlock2D",)
    plain = build_unet(T2ITrainConfig(widths=(64, 128, 192)), 16)  # default: every level but the deepest
    assert plain.config.down_block_types == ("CrossAttnDownBlock2D",) * 2 + ("DownBlock2D",)


def test_t2i_trainer_runs_and_saves_a_loadable_unet(tmp_path, monkeypatch):
    import magicvideo.judge.t2i as judge

    judged = []
    evaluate = judge.evaluate_t2i
    monkeypatch.setattr(judge, "evaluate_t2i", lambda stage, *a, **k: judged.append(stage.settings.size)
                        or evaluate(stage, *a, **k))
    vae = train_vae(_vae_config(2), tmp_path / "vae", progress=False)
    config = T2ITrainConfig(samples=8, size=32, vae=str(vae), batch_size=4, steps=3, warmup=1, checkpoint_every=2,
                            widths=(32, 64), head_dim=16, eval_prompts=2, snapshot_every=2)
    final = train_t2i(config, tmp_path / "t2i", progress=False)
    assert judged == [32]  # judged at the size it was trained at, not the stage's default 128
    in_workers = encode_images(replace(config, workers=1), AutoencoderKL.from_pretrained(vae), progress=False)
    torch.testing.assert_close(in_workers["latents"], torch.load(tmp_path / "t2i" / LATENTS)["latents"])
    unet = UNet2DConditionModel.from_pretrained(final)
    assert unet.config.cross_attention_dim == 384 and unet.config.sample_size == 4
    assert "Steps: 3" in (final / "README.md").read_text()
    # a run can start from another's snapshot (its EMA weights at one step): lr 0 keeps them exactly
    snapshot = tmp_path / "t2i" / "state" / "snapshots" / "step_0000002.safetensors"
    again = train_t2i(replace(config, init=str(snapshot), lr=0.0, steps=1, eval_prompts=0, snapshot_every=0),
                      tmp_path / "from_snapshot", progress=False)
    started = UNet2DConditionModel.from_pretrained(again).state_dict()
    for key, value in load_file(snapshot).items():
        torch.testing.assert_close(started[key], value.float(), msg=key)
    # ... or be exported as a stage folder that loads at the run's size
    exported = TextToImage.from_pretrained(export_snapshot(tmp_path / "t2i", 2, tmp_path / "stage"))
    assert exported.settings.size == 32
    torch.testing.assert_close(exported.unet.state_dict(), started)
    with pytest.raises(FileNotFoundError, match=r"no snapshot at step 3 .*kept: \[2\]"):
        export_snapshot(tmp_path / "t2i", 3, tmp_path / "other")


def test_t2i_lora_trains_over_a_frozen_unet_and_loads_fused(tmp_path):
    vae = train_vae(_vae_config(2), tmp_path / "vae", progress=False)
    config = T2ITrainConfig(samples=8, size=32, vae=str(vae), batch_size=4, steps=2, warmup=1, checkpoint_every=2,
                            widths=(32, 64), head_dim=16, eval_prompts=0)
    base = train_t2i(config, tmp_path / "base", progress=False)
    final = train_t2i(replace(config, init=str(base), lora=4, lr=1e-2, object_weight=10.0), tmp_path / "lora",
                      progress=False)
    assert sorted(p.name for p in final.iterdir()) == ["README.md", "config.json", "lora.safetensors"]
    lora = load_file(final / "lora.safetensors")
    assert lora and all(".lora_" in k and v.dtype == torch.float16 for k, v in lora.items())
    assert any("resnets" in k and "conv1" in k for k in lora)  # shapes are drawn by the convolutions
    tuned = TextToImage.from_pretrained(final)  # over the UNet and VAE the config names, fused
    plain = UNet2DConditionModel.from_pretrained(base)
    assert not any("lora" in k or "base_layer" in k for k in tuned.unet.state_dict())
    assert tuned.unet.state_dict().keys() == plain.state_dict().keys()
    moved = [k for k, v in plain.state_dict().items() if not torch.equal(v, tuned.unet.state_dict()[k])]
    assert moved and all("resnets" in k or "attn" in k or "ff.net" in k or "proj_" in k for k in moved)
    tuned.save_pretrained(tmp_path / "saved")  # a saved stage holds the fused UNet
    again = TextToImage.from_pretrained(tmp_path / "saved")
    prompt = "a red circle over a meadow"
    assert torch.allclose(again(prompt, steps=2, size=32).images, tuned(prompt, steps=2, size=32).images)


def test_upright_stills_keep_the_scene_but_the_angles():
    from magicvideo.training.t2i import _draw_images, object_coverage_cache
    from magicvideo.world import WorldImages, render_frames

    data = WorldImages("train", 0, 32, 6)
    scenes = [data.clip(i).scene for i in range(6)]
    assert any(o.angle != 0 for s in scenes for o in s.objects)
    for scene in scenes:
        up = scene.upright()
        assert [o.angle for o in up.objects] == [0.0] * len(scene.objects)
        assert [(o.shape, o.colour, o.x, o.y, o.radius) for o in up.objects] == \
            [(o.shape, o.colour, o.x, o.y, o.radius) for o in scene.objects] and up.background == scene.background
    plain, upright = (torch.from_numpy(_draw_images((0, 0, 6, 32, u))) for u in (False, True))
    torch.testing.assert_close(plain, torch.stack([data[i]["image"] for i in range(6)]))
    torch.testing.assert_close(upright, torch.stack([render_frames(s.upright(), 32, [0.0])[:, 0] for s in scenes]))
    assert not torch.equal(plain, upright)
    # the object masks the loss weights come from follow the stills trained on
    config = T2ITrainConfig(samples=6, size=32)
    covers = [object_coverage_cache(replace(config, upright=u), 4, progress=False)["objects"] for u in (False, True)]
    assert not torch.equal(*covers)


def test_object_weights_favour_the_objects_and_keep_the_loss_scale():
    from magicvideo.training.t2i import object_coverage_cache, object_weights

    coverage = object_coverage_cache(T2ITrainConfig(samples=6, size=64), 8, progress=False)["objects"]
    assert coverage.shape == (6, 1, 8, 8) and coverage.dtype == torch.float16
    assert coverage.min() >= 0 and coverage.max() <= 1
    assert (coverage.flatten(1).amax(1) > 0.5).all()  # every world image has an object, some cell mostly covered
    w = object_weights(coverage, 10.0)
    torch.testing.assert_close(w.mean(dim=(1, 2, 3)), torch.ones(6))  # mean 1 per image
    inside, outside = coverage > 0.5, coverage == 0
    assert all(w[i][inside[i]].min() > 3 * w[i][outside[i]].max() for i in range(6))
    assert torch.equal(object_weights(torch.zeros(2, 1, 8, 8), 10.0), torch.ones(2, 1, 8, 8))




def test_t2i_unet_levels_can_attend_to_the_text_only():
    from magicvideo.training.t2i import build_unet

    config = T2ITrainConfig(widths=(32, 64, 96), head_dim=16, attention=(0, 1), cross_only=(0,))
    unet = build_unet(config, 16)
    outer = unet.down_blocks[0].attentions[0].transformer_blocks[0]
    assert outer.attn1.is_cross_attention and outer.attn1.to_k.in_features == 384  # no self-attention there
    assert not unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1.is_cross_attention
    assert unet.up_blocks[-1].attentions[0].transformer_blocks[0].attn1.is_cross_attention  # mirrored on the way up
    hidden = torch.randn(2, 5, 384)
    assert unet(torch.randn(2, 4, 16, 16), torch.tensor([10, 900]), hidden).sample.shape == (2, 4, 16, 16)
    with pytest.raises(ValueError, match="cross_only"):
        build_unet(replace(config, cross_only=(2,)), 16)

def test_object_weights_apply_only_below_their_timestep():
    from magicvideo.diffusion.schedule import noise_scheduler
    from magicvideo.training.t2i import _batch, object_weights

    objects = torch.zeros(4, 1, 8, 8, dtype=torch.float16)
    objects[:, :, 2:4, 2:4] = 1
    cache = {"latents": torch.randn(4, 4, 8, 8), "hidden": torch.zeros(4, 3, 8), "empty_hidden": torch.zeros(3, 8),
             "objects": objects}
    config = T2ITrainConfig(batch_size=64, object_weight=10.0, object_weight_below=500)
    _, t, _, _, weight = _batch(cache, config, noise_scheduler(), 0)
    low = t < 500
    assert low.any() and (~low).any()
    assert torch.equal(weight[~low], torch.ones_like(weight[~low]))  # high noise: plain MSE, no lean toward objects
    assert torch.equal(weight[low], object_weights(objects[:1], 10.0).expand(int(low.sum()), -1, -1, -1))
    _, _, _, _, always = _batch(cache, replace(config, object_weight_below=1000), noise_scheduler(), 0)
    assert (always[:, 0, 2, 2] > 1).all()  # the default: every timestep weighted, as before

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
    # the trained stage samples with its config's noise prior; a bad one is refused before any work
    assert (a.settings.noise_prior, a.settings.noise_prior_decay) == (0.3, 1.0)
    with pytest.raises(ValueError, match="noise prior"):
        train_i2v(replace(config(1), noise_prior=1.0), tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad").exists()


def test_i2v_trainer_fine_tunes_a_saved_stage_and_draws_clips_in_workers(tmp_path):
    from magicvideo.training.i2v import I2VTrainConfig, train_i2v
    from tiny_components import tiny_unet, tiny_vae

    tiny_unet(384).save_pretrained(tmp_path / "unet")
    tiny_vae(levels=4).save_pretrained(tmp_path / "vae")
    base = I2VTrainConfig(clips=3, frames=3, size=32, t2i_unet=str(tmp_path / "unet"), vae=str(tmp_path / "vae"),
                          batch_size=2, image_batch_size=3, image_every=0, steps=2, warmup=1, checkpoint_every=2,
                          motion_heads=2, appearance_grid=2, appearance_widths=(8, 16),
                          controlnet_channels=(8, 16, 16, 32))
    first = train_i2v(base, tmp_path / "a", progress=False)
    tuned = train_i2v(replace(base, init=str(first), lr=1e-9, steps=1, workers=1), tmp_path / "b", progress=False)
    fresh = train_i2v(replace(base, lr=1e-9, steps=1), tmp_path / "c", progress=False)
    # one worker process draws and encodes the same clips as this process does
    a, b = torch.load(tmp_path / "a" / "clips.pt"), torch.load(tmp_path / "b" / "clips.pt")
    assert torch.equal(a["latents"], b["latents"]) and torch.equal(a["firsts"], b["firsts"])
    name = "motion_adapter/diffusion_pytorch_model.safetensors"
    start, after, scratch = (load_file(f / name) for f in (first, tuned, fresh))
    assert all(torch.allclose(start[k], after[k], atol=1e-6) for k in start)  # began where `first` ended
    assert not all(torch.allclose(scratch[k], after[k], atol=1e-6) for k in start)


def test_loop_stops_at_max_minutes_with_a_checkpoint_and_moves_batches(tmp_path):
    from magicvideo.training.common import load_checkpoint
    from magicvideo.training.loop import LoopSettings, run_loop, to_device

    nested = to_device({"x": [torch.ones(1), (torch.zeros(2), 3)]}, torch.device("cpu"))
    assert torch.equal(nested["x"][1][0], torch.zeros(2)) and nested["x"][1][1] == 3
    model = torch.nn.Linear(2, 1)
    settings = LoopSettings(steps=50, lr=1e-2, warmup=1, checkpoint_every=100, max_minutes=1e-9)
    result = run_loop(tmp_path, model, settings, lambda s: torch.ones(4, 2), lambda m, b: m(b).pow(2).mean(),
                      "toy", progress=False)
    assert result.steps == 1 and load_checkpoint(tmp_path)["step"] == 1


def test_loop_keeps_ema_snapshots_for_a_learning_curve(tmp_path):
    from magicvideo.training.loop import SNAPSHOTS, LoopSettings, run_loop

    model = torch.nn.Linear(2, 1)
    model.bias.requires_grad_(False)
    settings = LoopSettings(steps=5, lr=1e-2, warmup=1, checkpoint_every=100, snapshot_every=2, ema_decay=0.5)
    result = run_loop(tmp_path, model, settings, lambda s: torch.ones(4, 2), lambda m, b: m(b).pow(2).mean(),
                      "toy", progress=False)
    snaps = sorted(p.name for p in (tmp_path / SNAPSHOTS).iterdir())
    assert snaps == ["step_0000002.safetensors", "step_0000004.safetensors"]
    four = load_file(tmp_path / SNAPSHOTS / snaps[1])
    assert list(four) == ["weight"] and four["weight"].dtype == torch.float16  # trainable parameters only
    assert not torch.allclose(four["weight"].float(), result.model.weight.detach(), atol=1e-4)  # step 4, not 5


def test_loop_bf16_runs_the_loss_under_autocast_and_keeps_fp32_weights(tmp_path):
    import pytest

    from magicvideo.training.loop import LoopSettings, run_loop

    seen = []

    def loss(m, b):
        out = m(b)
        seen.append(out.dtype)
        return out.float().pow(2).mean()

    model = torch.nn.Linear(2, 1)
    before = model.weight.detach().clone()
    result = run_loop(tmp_path / "a", model, LoopSettings(steps=2, lr=1e-2, warmup=1, mixed_precision="bf16"),
                      lambda s: torch.ones(4, 2), loss, "toy", progress=False)
    assert seen == [torch.bfloat16] * 2
    assert result.model.weight.dtype == torch.float32 and not torch.equal(result.model.weight, before)
    with pytest.raises(ValueError, match="mixed_precision must be"):
        run_loop(tmp_path / "b", model, LoopSettings(steps=1, lr=1e-2, mixed_precision="fp16"),
                 lambda s: torch.ones(4, 2), loss, "toy", progress=False)


def _fine_tune_config(tmp_path):
    """A toy I2V config on a tiny stage-1 UNet and VAE saved under tmp_path (video batches, lr 1e-2)."""
    from magicvideo.training.i2v import I2VTrainConfig
    from tiny_components import tiny_unet, tiny_vae

    tiny_unet(384).save_pretrained(tmp_path / "unet")
    tiny_vae(levels=4).save_pretrained(tmp_path / "vae")
    return I2VTrainConfig(clips=3, frames=3, size=32, t2i_unet=str(tmp_path / "unet"), vae=str(tmp_path / "vae"),
                          batch_size=2, image_every=0, steps=2, warmup=1, lr=1e-2, motion_heads=2,
                          appearance_grid=2, appearance_widths=(8, 16), controlnet_channels=(8, 16, 16, 32))


def test_i2v_text_attention_is_trained_saved_apart_and_loaded(tmp_path):
    from magicvideo.stages.i2v import TEXT_ATTENTION_FILE, ImageToVideo, text_attention
    from magicvideo.training.i2v import train_i2v

    config = _fine_tune_config(tmp_path)
    plain = train_i2v(config, tmp_path / "plain", progress=False)
    tuned = train_i2v(replace(config, text_attention=True), tmp_path / "tuned", progress=False)
    assert not (plain / TEXT_ATTENTION_FILE).exists() and (tuned / TEXT_ATTENTION_FILE).is_file()
    spatial = UNet2DConditionModel.from_pretrained(tmp_path / "unet")
    stage = ImageToVideo.from_pretrained(tuned, unet=tmp_path / "unet", vae=tmp_path / "vae")  # stage 1's UNet
    assert stage.tuned_text_attention
    before, after = dict(spatial.named_parameters()), text_attention(stage.unet)
    assert after and all(".attn2.to_" in k for k in after)
    assert all(not torch.equal(before[k], after[k]) for k in after)  # trained, and loaded over stage 1's
    rest = {k: v for k, v in stage.spatial_unet().state_dict().items() if k not in after}
    assert all(torch.equal(before[k], v) for k, v in rest.items())  # nothing else in the spatial UNet moved


def test_i2v_motion_text_trains_beside_frozen_parts(tmp_path):
    import pytest

    from magicvideo.stages.i2v import MOTION_TEXT_FILE
    from magicvideo.training.i2v import train_i2v

    config = _fine_tune_config(tmp_path)
    base = train_i2v(config, tmp_path / "base", progress=False)
    assert not (base / MOTION_TEXT_FILE).exists()
    tuned = train_i2v(replace(config, init=str(base), motion_text=True, freeze=("appearance", "controlnet")),
                      tmp_path / "tuned", progress=False)
    branch = load_file(tuned / MOTION_TEXT_FILE)
    assert all(v.any() for k, v in branch.items() if "to_v_text" in k)  # the values left zero: trained
    for part in ("controlnet/diffusion_pytorch_model.safetensors", "appearance/diffusion_pytorch_model.safetensors",
                 "appearance/branch.safetensors"):
        before, after = load_file(base / part), load_file(tuned / part)
        assert all(torch.equal(before[k], after[k]) for k in before), part  # frozen
    moved = "motion_adapter/diffusion_pytorch_model.safetensors"
    before, after = load_file(base / moved), load_file(tuned / moved)
    assert not all(torch.equal(before[k], after[k]) for k in before)
    with pytest.raises(ValueError, match="unknown part"):
        train_i2v(replace(config, freeze=("unet",)), tmp_path / "bad", progress=False)


def test_motion_weights_favour_what_moves_and_keep_the_loss_scale():
    from magicvideo.training.i2v import _motion_weights

    x0 = torch.randn(2, 4, 1, 8, 8).repeat(1, 1, 6, 1, 1)  # two still clips of 6 frames
    still = _motion_weights(x0, 2.0)
    assert still.shape == (2, 1, 6, 8, 8) and torch.allclose(still, torch.ones_like(still))
    for f in range(6):  # clip 0: a bright cell moving right along row 3
        x0[0, :, f, 3, f] += 5.0
    w = _motion_weights(x0, 2.0)
    torch.testing.assert_close(w.mean(dim=(2, 3, 4)), torch.ones(2, 1))  # mean 1 per clip
    assert w[0, 0, 2, 3, 2] > 3 * w[0, 0, 2, 6, 6]  # where the object is outweighs the background
    assert torch.allclose(w[1], torch.ones_like(w[1]))  # the other clip is untouched
    assert torch.equal(_motion_weights(x0[:, :, :1], 2.0), torch.ones(2, 1, 1, 8, 8))  # one-frame batches


def test_i2v_motion_lora_trains_over_a_frozen_motion_adapter(tmp_path):
    from magicvideo.stages.i2v import MOTION_LORA_FILE, ImageToVideo
    from magicvideo.training.i2v import train_i2v

    config = _fine_tune_config(tmp_path)
    base = train_i2v(config, tmp_path / "base", progress=False)
    tuned = train_i2v(replace(config, init=str(base), motion_lora=2, motion_weight=1.0,
                              freeze=("motion_modules", "appearance", "controlnet")),
                      tmp_path / "tuned", progress=False)
    lora = load_file(tuned / MOTION_LORA_FILE)
    assert any(v.any() for k, v in lora.items() if "lora_B" in k)  # B left zero: trained
    for part in ("motion_adapter/diffusion_pytorch_model.safetensors", "controlnet/diffusion_pytorch_model.safetensors",
                 "appearance/branch.safetensors"):
        before, after = load_file(base / part), load_file(tuned / part)
        assert all(torch.equal(before[k], after[k]) for k in before), part  # frozen
    stage = ImageToVideo.from_pretrained(tuned, unet=tmp_path / "unet", vae=tmp_path / "vae")
    assert any("lora_B" in n and p.any() for n, p in stage.unet.named_parameters())


def test_cards_name_the_gpu_a_run_used(monkeypatch):
    from magicvideo.training.common import machine

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "CPU threads" in machine() and "H100" not in machine()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "NVIDIA H100 80GB HBM3")
    assert machine().startswith("NVIDIA H100 80GB HBM3; ") and "CPU threads" in machine()


def test_timestep_focus_draws_the_share_asked_from_high_noise_and_leaves_plain_configs_alone():
    from magicvideo.training.t2i import _timesteps

    def draw(**focus) -> torch.Tensor:
        return _timesteps(T2ITrainConfig(**focus), 1000, 4000, torch.Generator().manual_seed(3))

    plain = draw()
    assert torch.equal(plain, torch.randint(0, 1000, (4000,), generator=torch.Generator().manual_seed(3)))
    assert torch.equal(draw(focus_share=0.0, focus_from=800), plain)
    assert draw(focus_share=1.0, focus_from=800).min() >= 800
    half = draw(focus_share=0.5, focus_from=500)
    assert 0.70 < (half >= 500).float().mean() < 0.80  # 0.5 focused + 0.5 x 0.5 of the uniform ones
    assert half.max() < 1000


def test_i2v_object_weights_favour_the_objects_in_video_and_image_batches():
    from magicvideo.diffusion.schedule import noise_scheduler
    from magicvideo.training.i2v import I2VTrainConfig, _batch, _draw_coverage

    coverage = torch.from_numpy(_draw_coverage((0, 0, 2, 3, 32, 4)))  # 2 train clips, 3 keyframes, 8x8 cells
    assert coverage.shape == (2, 1, 3, 8, 8) and 0 < coverage.mean() < 0.5 and coverage.max() <= 1
    config = I2VTrainConfig(clips=2, frames=3, size=32, batch_size=2, image_batch_size=2, image_every=2,
                            object_weight=10)
    cache = {"latents": torch.randn(2, 4, 3, 8, 8).half(), "firsts": torch.zeros(2, 3, 32, 32, dtype=torch.uint8),
             "hidden": torch.zeros(2, 5, 384).half(), "empty_hidden": torch.zeros(5, 384).half(),
             "objects": coverage.half()}
    for step, frames in ((0, 3), (1, 1)):  # a video batch, then an image batch of single frames
        weight = _batch(cache, config, noise_scheduler(), step)["weight"]
        assert weight.shape == (2, 1, frames, 8, 8)
        torch.testing.assert_close(weight.mean(dim=(1, 2, 3, 4)), torch.ones(2))
        assert weight.max() > 3 * weight.min()  # object cells weigh more than the background's
    assert "weight" not in _batch(cache, replace(config, object_weight=0), noise_scheduler(), 0)
