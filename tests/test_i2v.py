import pytest
import torch
from diffusers import ControlNetModel, MotionAdapter

from magicvideo.diffusion.video import noise_prior
from magicvideo.judge.prompt import with_motion
from magicvideo.stages.i2v import I2VSettings, ImageToVideo
from tiny_components import tiny_i2v, tiny_unet, tiny_vae


def test_noise_prior_formula():
    noise, ref = torch.randn(2, 4, 5, 3, 3), torch.randn(2, 4, 3, 3)
    assert torch.equal(noise_prior(noise, ref, 0.0), noise)
    x = noise_prior(noise, ref, 0.6)
    torch.testing.assert_close(x, 0.6 * ref[:, :, None] + 0.8 * noise)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        noise_prior(noise, ref, 1.0)
    falling = noise_prior(noise, ref, 0.6, decay=0.5)  # lean 0.6 at the first frame, 0.3 at the last
    torch.testing.assert_close(falling[:, :, 0], x[:, :, 0])
    torch.testing.assert_close(falling[:, :, -1], 0.3 * ref + 0.91**0.5 * noise[:, :, -1])
    torch.testing.assert_close(falling[:, :, 2], 0.45 * ref + (1 - 0.45**2) ** 0.5 * noise[:, :, 2])
    assert torch.equal(noise_prior(noise, ref, 0.0, decay=1.0), noise)
    with pytest.raises(ValueError, match="decay"):
        noise_prior(noise, ref, 0.6, decay=1.5)


def test_frames_shape_and_determinism(text):
    stage = tiny_i2v(text)
    ref = torch.rand(3, 32, 32)
    a = stage("a red circle moving left over a meadow", ref, seed=3).frames
    assert a.shape == (1, 3, 3, 32, 32) and 0 <= a.min() and a.max() <= 1
    assert torch.equal(stage("a red circle moving left over a meadow", ref, seed=3).frames, a)
    assert stage("a red circle", torch.rand(1, 3, 48, 48), frames=2).frames.shape == (1, 3, 2, 32, 32)


def test_switches_equal_the_stage_without_the_part(text):
    ref, prompt = torch.rand(3, 32, 32), "a blue star spinning over a sunset"
    full = tiny_i2v(text)
    no_image = tiny_i2v(text, appearance=False)
    no_control = tiny_i2v(text, controlnet=False)
    torch.testing.assert_close(full(prompt, ref, appearance_scale=0.0).frames, no_image(prompt, ref).frames)
    torch.testing.assert_close(full(prompt, ref, use_controlnet=False).frames, no_control(prompt, ref).frames)
    base = full(prompt, ref).frames
    leaning = full(prompt, ref, noise_prior=0.5).frames
    assert not torch.allclose(leaning, base)
    assert not torch.allclose(full(prompt, ref, noise_prior=0.5, noise_prior_decay=1.0).frames, leaning)
    torch.testing.assert_close(full(prompt, ref, noise_prior_decay=1.0).frames, base)  # no lean, nothing to decay
    assert not torch.allclose(full(prompt, ref, appearance_scale=0.0).frames, base)


def test_save_and_load_round_trip(text, tmp_path):
    stage = tiny_i2v(text)
    stage.settings.noise_prior = 0.3
    stage.save_pretrained(tmp_path / "i2v")
    for part in ("unet", "motion_adapter", "vae", "controlnet", "appearance", "stage.json"):
        assert (tmp_path / "i2v" / part).exists(), part
    again = ImageToVideo.from_pretrained(tmp_path / "i2v")
    assert again.settings == stage.settings
    ref = torch.rand(3, 32, 32)
    torch.testing.assert_close(again("a pink heart", ref).frames, stage("a pink heart", ref).frames)
    with pytest.raises(FileNotFoundError, match="stage.json"):
        ImageToVideo.from_pretrained(tmp_path)


def test_evaluation_reports_the_quality_bar_figures(text):
    from magicvideo.judge.i2v import evaluate_i2v

    report = evaluate_i2v(tiny_i2v(text), count=2, batch=2, progress=False, steps=1)
    assert report["clips"] == 2
    assert {"shape", "colour", "motion", "background", "all"} <= set(report["accuracy"])
    for key in ("frame_shape", "frame_colour"):
        assert 0 <= report[key] <= 1
    assert report["first_frame_psnr"] > 0 and report["seconds_per_clip"] > 0
    assert report["ground_truth_flicker"] >= 0


def test_stage_without_shared_parts_loads_on_borrowed_unet_and_vae(text, tmp_path):
    stage = tiny_i2v(text)
    stage.save_pretrained(tmp_path / "full")
    stage.save_pretrained(tmp_path / "own", shared=False)
    assert not (tmp_path / "own" / "unet").exists() and not (tmp_path / "own" / "vae").exists()
    with pytest.raises(FileNotFoundError, match="missing unet weights"):
        ImageToVideo.from_pretrained(tmp_path / "own")
    again = ImageToVideo.from_pretrained(tmp_path / "own", unet=tmp_path / "full" / "unet",
                                         vae=tmp_path / "full" / "vae")
    ref = torch.rand(3, 32, 32)
    torch.testing.assert_close(again("a green moon", ref).frames, stage("a green moon", ref).frames)


def test_load_i2v_errors(tmp_path):
    from magicvideo.presets import load_i2v

    with pytest.raises(ValueError, match="unknown preset"):
        load_i2v("sdxl")
    with pytest.raises(FileNotFoundError, match="no image-to-video weights"):
        load_i2v("tiny", tmp_path)


def _cli(*args):
    from magicvideo.cli import main

    return main(list(args))


@pytest.mark.parametrize("args, message", [
    (["  ", "--image", "REF", "-o", "OUT.mp4"], "prompt is empty"),
    (["a red star", "--image", "REF", "-o", "OUT.png"], "video file"),
    (["a red star", "--image", "REF", "-o", "OUT.mp4", "--frames", "0"], "--frames"),
    (["a red star", "--image", "REF", "-o", "OUT.mp4", "--noise-prior", "1"], "--noise-prior"),
    (["a red star", "--image", "REF", "-o", "OUT.mp4", "--noise-prior-decay", "2"], "--noise-prior-decay"),
    (["a red star", "--image", "REF", "-o", "OUT.mp4", "--appearance-scale", "-1"], "--appearance-scale"),
    (["a red star", "--image", "REF", "-o", "OUT.mp4", "--motion-text-scale", "-1"], "--motion-text-scale"),
    (["a red star", "--image", "REF", "-o", "OUT.mp4", "--steps", "0"], "--steps"),
    (["a red star", "--image", "REF", "-o", "OUT.mp4", "--motion-guidance", "-1"], "--motion-guidance"),
    (["a red star", "--image", "REF", "-o", "OUT.mp4", "--controlnet-scale", "-1"], "--controlnet-scale"),
    (["a red star", "--image", "REF", "-o", "OUT.mp4", "--negative-prompt", " "], "negative prompt is empty"),
    (["a red star", "--image", "MISSING", "-o", "OUT.mp4"], "no such image"),
    (["a red star", "--image", "BROKEN", "-o", "OUT.mp4"], "cannot read"),
    (["a red star", "--image", "REF", "-o", "OUT.mp4", "--weights", "EMPTY"], "no image-to-video weights"),
])
def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, args, message):
    from magicvideo.media import write_image

    write_image(tmp_path / "ref.png", torch.rand(3, 64, 64))
    (tmp_path / "broken.png").write_bytes(b"not an image")
    (tmp_path / "empty").mkdir()
    names = {"REF": "ref.png", "MISSING": "missing.png", "BROKEN": "broken.png", "EMPTY": "empty",
             "OUT.mp4": "out.mp4", "OUT.png": "out.png"}
    args = [str(tmp_path / names[a]) if a in names else a for a in args]
    assert _cli("i2v", *args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "out.mp4").exists() and not (tmp_path / "out.png").exists()


def test_cli_writes_keyframes_and_says_how_it_fitted_the_image(text, tmp_path, capsys):
    from magicvideo.media import read_video, write_image

    tiny_i2v(text).save_pretrained(tmp_path / "i2v")
    write_image(tmp_path / "ref.png", torch.rand(3, 50, 40))
    assert _cli("i2v", "a yellow square sliding right", "--image", str(tmp_path / "ref.png"), "-o",
                str(tmp_path / "k.mp4"), "--frames", "4", "--weights", str(tmp_path / "i2v"), "--quiet") == 0
    out = capsys.readouterr()
    assert "is 40x50; cropped to a square (--fit)" in out.err and "4 keyframes at 32x32" in out.out
    video, fps = read_video(tmp_path / "k.mp4")
    assert video.shape == (3, 4, 32, 32) and fps == 8
    assert _cli("i2v", "a yellow square sliding right", "--image", str(tmp_path / "ref.png"), "-o",
                str(tmp_path / "w.mp4"), "--frames", "2", "--width", "64", "--height", "32", "--fit", "pad",
                "--weights", str(tmp_path / "i2v"), "--quiet") == 0
    assert "padded on black to the frames' 64:32" in capsys.readouterr().err
    assert read_video(tmp_path / "w.mp4")[0].shape == (3, 2, 32, 64)


def test_full_size_layout_with_clip_text_and_image_encoders_round_trips(tmp_path):
    """The SD1.5/AnimateDiff layout: CLIP text encoder + tokenizer, CLIP image encoder +
    appearance projection, motion adapter, ControlNet; tiny random components, saved and
    loaded back from the folder alone."""
    from magicvideo.models.appearance import AppearanceProjection, CLIPAppearanceEncoder
    from magicvideo.text import CLIPTextEncoder
    from tiny_components import clip_image_encoder, clip_text_model, clip_tokenizer

    tokenizer = clip_tokenizer(tmp_path / "tok")
    text = CLIPTextEncoder(tokenizer, clip_text_model(tokenizer))
    torch.manual_seed(3)
    appearance = CLIPAppearanceEncoder(clip_image_encoder(), AppearanceProjection(16, num_tokens=2, dim=32))
    adapter = MotionAdapter(block_out_channels=(32, 64), motion_layers_per_block=1, motion_num_attention_heads=2,
                            motion_norm_num_groups=32, use_motion_mid_block=False)
    cn = ControlNetModel.from_unet(tiny_unet(32), conditioning_embedding_out_channels=(8, 16, 16, 32))
    stage = ImageToVideo.inflate(tiny_unet(32), tiny_vae(levels=4), text, adapter, appearance, cn,
                                 I2VSettings(size=32, frames=2, steps=2, guidance=2.0))
    ref = torch.rand(3, 48, 48)
    assert appearance(ref[None]).shape == (1, 2, 32)
    stage.save_pretrained(tmp_path / "sd15_i2v")
    for part in ("text_encoder", "tokenizer", "image_encoder", "appearance", "motion_adapter", "controlnet"):
        assert (tmp_path / "sd15_i2v" / part).is_dir(), part
    again = ImageToVideo.from_pretrained(tmp_path / "sd15_i2v")
    assert isinstance(again.text_encoder, CLIPTextEncoder) and isinstance(again.appearance, CLIPAppearanceEncoder)
    torch.testing.assert_close(again("a red ball", ref).frames, stage("a red ball", ref).frames)
    torch.testing.assert_close(again("a red ball", ref, appearance_scale=0.0).frames,
                               stage("a red ball", ref, appearance_scale=0.0).frames)
    assert not torch.allclose(stage("a red ball", ref, appearance_scale=0.0).frames, stage("a red ball", ref).frames)


def test_shipped_tiny_weights_through_the_cli(tmp_path, capsys):
    """The shipped stage (motion adapter, ControlNet, appearance encoder on stage 1's UNet and
    VAE) animates a world reference image from the command line (few steps: plumbing, not quality)."""
    from magicvideo.media import read_video, write_image
    from magicvideo.presets.tiny import TINY_I2V
    from magicvideo.world import draw_clip, render_frames

    assert not (TINY_I2V / "unet").exists(), "the tiny I2V folder must not repeat stage 1's UNet"
    clip = draw_clip(4242, "heldout", 0)
    write_image(tmp_path / "ref.png", render_frames(clip.scene, 128, [0.0])[:, 0])
    assert _cli("i2v", clip.caption, "--image", str(tmp_path / "ref.png"), "-o", str(tmp_path / "k.mp4"),
                "--steps", "2", "--frames", "4", "--quiet") == 0
    printed = capsys.readouterr()
    assert "4 keyframes at 64x64" in printed.out and "note" not in printed.err  # a square image needs no fitting
    video, fps = read_video(tmp_path / "k.mp4")
    assert video.shape == (3, 4, 64, 64) and fps == 8 and video.std() > 0.01


def test_shipped_stage_applies_its_motion_lora():
    """Version 3 is v2's files plus motion_lora.safetensors: loading the shipped stage attaches it,
    and it changes the video (with it off, the stage is v2)."""
    from magicvideo.models.motion_lora import has_motion_lora
    from magicvideo.presets import load_i2v
    from magicvideo.presets.tiny import TINY_I2V
    from magicvideo.stages.i2v import MOTION_LORA_FILE
    from magicvideo.world import draw_clip, render_frames

    assert (TINY_I2V / MOTION_LORA_FILE).is_file()
    stage = load_i2v("tiny")
    assert has_motion_lora(stage.unet)
    clip = draw_clip(4242, "heldout", 1)
    ref = render_frames(clip.scene, 64, [0.0])[:, 0][None]
    with_lora = stage([clip.caption], ref, seed=0, steps=2, frames=4).frames
    stage.unet.disable_adapters()
    without = stage([clip.caption], ref, seed=0, steps=2, frames=4).frames
    assert (with_lora - without).abs().max() > 1e-3


def test_ground_truth_stand_in_scores_perfectly_and_the_vae_round_trip_does_not_exceed_it():
    from magicvideo.judge.i2v import evaluate_i2v, ground_truth

    truth = evaluate_i2v(None, count=2, batch=2, progress=False, size=64, generate=ground_truth(64, 16), frames=16)
    assert truth["accuracy"]["all"] == 1.0 and truth["frame_shape"] == 1.0 and truth["flicker_ratio"] == 1.0
    assert truth["first_frame_psnr"] > 40
    blurred = evaluate_i2v(None, count=2, batch=2, progress=False, size=64,
                           generate=ground_truth(64, 16, tiny_vae(4)), frames=16)
    assert blurred["first_frame_psnr"] < truth["first_frame_psnr"]


def test_negative_prompt_is_what_guidance_steers_from(text):
    stage, ref = tiny_i2v(text), torch.rand(3, 32, 32)
    prompt = "a red circle moving left over a meadow"
    plain = stage(prompt, ref, seed=2).frames
    # the prompt as its own negative leaves nothing to amplify: the unguided prediction
    torch.testing.assert_close(stage(prompt, ref, seed=2, negative_prompt=prompt).frames,
                               stage(prompt, ref, seed=2, guidance=1.0).frames, atol=1e-5, rtol=0)
    still = stage(prompt, ref, seed=2, negative_prompt="a red circle staying still over a meadow").frames
    assert (still - plain).abs().max() > 1e-4
    both = stage([prompt, prompt], ref, seed=[2, 2], negative_prompt=[prompt, "a red circle staying still"]).frames
    torch.testing.assert_close(both[:1], stage(prompt, ref, seed=2, guidance=1.0).frames, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="2 negative prompts for 1"):
        stage(prompt, ref, negative_prompt=["a", "b"])


def test_motion_guidance_amplifies_only_what_the_still_prompt_lacks(text):
    stage, ref = tiny_i2v(text), torch.rand(3, 32, 32)
    moving = "a red circle moving left over a meadow"
    plain = stage(moving, ref, seed=2).frames
    # the still version being the prompt itself, there is nothing to amplify
    torch.testing.assert_close(stage(moving, ref, seed=2, motion_guidance=3.0, still_prompt=moving).frames, plain,
                               atol=1e-5, rtol=0)
    still = with_motion(moving)  # the world's own words for its still version ("staying still")
    assert (stage(moving, ref, seed=2, motion_guidance=3.0, still_prompt=still).frames - plain).abs().max() > 1e-4
    stage.settings.motion_guidance = 3.0  # the stage's default, as stage.json sets it
    torch.testing.assert_close(stage(moving, ref, seed=2, motion_guidance=0.0).frames, plain)
    with pytest.raises(ValueError, match="guidance > 1"):
        stage(moving, ref, guidance=1.0, still_prompt=still)
    with pytest.raises(ValueError, match="still_prompt"):
        stage(moving, ref)
    with pytest.raises(ValueError, match="2 still prompts for 1"):
        stage(moving, ref, still_prompt=[still, still])


def test_controlnet_scale_weighs_the_reference_rgb(text):
    ref, prompt = torch.rand(3, 32, 32), "a green box moving up over a desert"
    stage = tiny_i2v(text)
    with torch.no_grad():  # the zero convolutions start at zero: give the ControlNet residuals to weigh
        for p in stage.controlnet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    base = stage(prompt, ref).frames
    torch.testing.assert_close(stage(prompt, ref, controlnet_scale=0.0).frames,
                               stage(prompt, ref, use_controlnet=False).frames)
    torch.testing.assert_close(stage(prompt, ref, controlnet_scale=1.0).frames, base)
    assert not torch.allclose(stage(prompt, ref, controlnet_scale=1.5).frames, base)
    stage.settings.controlnet_scale = 0.0  # the stage's default is what a call without one uses
    torch.testing.assert_close(stage(prompt, ref).frames, stage(prompt, ref, use_controlnet=False).frames)
    with pytest.raises(ValueError, match="controlnet scale must be at least 0"):
        stage(prompt, ref, controlnet_scale=-0.5)
