"""The full-size preset's path (`--preset sd15 --weights DIR`), on a folder that
magicvideo.presets.sd15.write_random builds with the real classes at test size."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from diffusers import ControlNetModel

from magicvideo.cli import main
from magicvideo.device import Placement
from magicvideo.models.appearance import CLIPAppearanceEncoder
from magicvideo.presets import load_i2v, load_t2i, load_v2v
from magicvideo.presets.sd15 import WeightsError, check_folder, i2v_parts, write_random
from magicvideo.stages.t2i import DiffusersTextToImage
from magicvideo.text import CLIPTextEncoder
from tiny_components import small_sd15_shapes


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return write_random(tmp_path_factory.mktemp("sd15") / "weights", small_sd15_shapes(), dtype=torch.float32,
                        progress=False)


@pytest.fixture()
def copy(weights, tmp_path):
    """A copy of the folder to break."""
    return shutil.copytree(weights, tmp_path / "weights")


def _edit(path, **changes):
    config = json.loads(path.read_text())
    path.write_text(json.dumps(config | changes))


def test_written_folder_has_the_documented_layout_and_passes_the_check(weights):
    for part in ("t2i/model_index.json", "t2i/unet", "t2i/vae", "t2i/text_encoder", "t2i/tokenizer",
                 "t2i/scheduler", "i2v/stage.json", "i2v/motion_adapter", "i2v/controlnet", "i2v/image_encoder",
                 "i2v/appearance/branch.safetensors", "v2v/stage.json", "v2v/motion_adapter", "v2v/controlnet"):
        assert (weights / part).exists(), part
    assert not list(weights.rglob("*.bin")), "weights are safetensors only"
    check_folder(weights)
    assert i2v_parts(weights)["unet"] == weights / "t2i" / "unet"  # borrowed from the T2I pipeline
    with pytest.raises(FileExistsError):
        write_random(weights, small_sd15_shapes(), progress=False)


@pytest.mark.parametrize("damage, named", [
    (lambda w: (w / "i2v" / "controlnet" / "config.json").unlink(), "i2v/controlnet: missing"),
    (lambda w: _edit(w / "i2v" / "motion_adapter" / "config.json", block_out_channels=[64, 64]),
     "i2v/motion_adapter: block_out_channels [64, 64] does not match the UNet's [32, 64]"),
    (lambda w: _edit(w / "v2v" / "controlnet" / "config.json", conditioning_channels=3),
     "v2v/controlnet: conditioning_channels 3, expected 6"),
    (lambda w: _edit(w / "t2i" / "text_encoder" / "config.json", hidden_size=48),
     "text_encoder: hidden_size 48 does not match the UNet's 32"),
    (lambda w: _edit(w / "i2v" / "appearance" / "config.json", embed_dim=8), "i2v/image_encoder: projection_dim 16"),
    (lambda w: [f.unlink() for f in (w / "v2v" / "motion_adapter").glob("*.safetensors")],
     "v2v/motion_adapter: no .safetensors weights"),
    (lambda w: (w / "t2i" / "model_index.json").unlink(), "t2i: missing"),
])
def test_check_names_the_part_at_fault(copy, damage, named):
    damage(copy)
    with pytest.raises(WeightsError, match="do not fit") as err:
        check_folder(copy)
    assert named in str(err.value)


def test_every_problem_in_one_message(copy):
    (copy / "i2v" / "controlnet" / "config.json").unlink()
    _edit(copy / "v2v" / "controlnet" / "config.json", conditioning_channels=3)
    with pytest.raises(WeightsError) as err:
        check_folder(copy)
    assert "i2v/controlnet" in str(err.value) and "v2v/controlnet" in str(err.value)
    check_folder(copy, ("t2i",))  # a stage that is not asked for is not checked


def test_every_component_loads_and_stage_3_shares_stage_2s_backbone(weights):
    i2v = load_i2v("sd15", weights)
    assert isinstance(i2v.text_encoder, CLIPTextEncoder) and i2v.text_encoder.max_tokens == 77
    assert isinstance(i2v.appearance, CLIPAppearanceEncoder) and isinstance(i2v.controlnet, ControlNetModel)
    assert i2v.scheduler_config["beta_schedule"] == "scaled_linear"  # the weights' schedule, not the tiny one
    assert i2v.settings.size == 32
    v2v = load_v2v("sd15", weights, i2v=i2v)
    assert v2v.controlnet.config.conditioning_channels == 6
    assert v2v.unet.conv_in.weight is i2v.unet.conv_in.weight
    assert isinstance(load_t2i("sd15", weights), DiffusersTextToImage)
    ref = torch.rand(3, 40, 40)
    low = i2v("a red ball", ref, seed=1).frames
    assert low.shape == (1, 3, 3, 32, 32) and torch.isfinite(low).all()
    high = v2v("a red ball", low, ref, seed=1).frames
    assert high.shape == (1, 3, 3, 64, 64) and torch.isfinite(high).all()


def test_stage_2_prefers_its_own_copy_of_a_borrowed_part(copy):
    shutil.copytree(copy / "t2i" / "vae", copy / "i2v" / "vae")
    assert i2v_parts(copy)["vae"] == copy / "i2v" / "vae"
    assert i2v_parts(copy)["unet"] == copy / "t2i" / "unet"


def test_memory_controls_keep_the_output(weights):
    """Offload, VAE chunks and bf16 change where and how it computes, not what (bf16: closely)."""
    ref = torch.rand(3, 32, 32)
    plain = load_i2v("sd15", weights)
    base = plain("a red ball", ref, seed=2).frames
    light = load_i2v("sd15", weights, Placement(offload=True, vae_chunk=1))
    torch.testing.assert_close(light("a red ball", ref, seed=2).frames, base)
    assert all(p.device.type == "cpu" for m in light.models() for p in m.parameters())
    half = load_i2v("sd15", weights, Placement(dtype="bf16"))
    assert half.unet.dtype == torch.bfloat16 and half.vae.dtype == torch.bfloat16
    out = half("a red ball", ref, seed=2).frames
    assert out.dtype == torch.float32 and (out - base).abs().mean() < 0.05
    with pytest.raises(ValueError, match="dtype"):
        Placement(dtype="fp8")
    with pytest.raises(ValueError, match="multiple of 16"):
        plain("a red ball", ref, size=40)


def _cli(*args: str) -> int:
    return main(list(args))


def test_generate_runs_the_full_size_path_end_to_end_and_resumes(weights, tmp_path, capsys):
    out = tmp_path / "run"
    assert _cli("generate", "a red ball", "--preset", "sd15", "--weights", str(weights), "--out", str(out),
                "--frames", "3", "--t2i-size", "32", "--t2i-steps", "2", "--i2v-steps", "2", "--v2v-steps", "2",
                "--device", "cpu", "--quiet") == 0
    for name in ("reference.png", "keyframes.mp4", "hires.mp4", "final.mp4", "manifest.json"):
        assert (out / name).is_file(), name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["preset"] == "sd15" and manifest["settings"]["weights"] == str(weights.resolve())
    assert manifest["settings"]["dtype"] == "fp32"
    from magicvideo.media import read_video

    video, _ = read_video(out / "final.mp4")
    assert video.shape == (3, 7, 64, 64)  # 3 keyframes at 64x64 (the folder's v2v size), 2 new per gap
    before = (out / "final.mp4").read_bytes()
    assert _cli("generate", "--resume", str(out), "--device", "cpu", "--quiet") == 0
    assert (out / "final.mp4").read_bytes() == before


def test_generate_makes_a_wide_video_at_full_size(weights, tmp_path):
    """--width/--height: stage 3's frames that size, stages 1-2 at the folder's ratio of sides."""
    from magicvideo.media import read_image, read_video

    out = tmp_path / "wide"
    assert _cli("generate", "a red ball", "--preset", "sd15", "--weights", str(weights), "--out", str(out),
                "--frames", "2", "--width", "128", "--height", "64", "--t2i-steps", "1", "--i2v-steps", "1",
                "--v2v-steps", "1", "--device", "cpu", "--quiet") == 0
    keys, _ = read_video(out / "keyframes.mp4")
    video, _ = read_video(out / "final.mp4")
    assert read_image(out / "reference.png").shape == (3, 64, 128) and keys.shape[-2:] == (32, 64)  # 64:32:64
    assert video.shape == (3, 4, 64, 128)


@pytest.mark.parametrize("args, message", [
    (["--preset", "sd15"], "needs --weights"),
    (["--preset", "sd15", "--weights", "{broken}"], "i2v/motion_adapter: missing"),
    (["--preset", "sd15", "--weights", "{weights}", "--i2v-size", "40"], "multiple of 16"),
    (["--preset", "sd15", "--weights", "{weights}", "--device", "cuda:7"] if not torch.cuda.is_available() else
     ["--preset", "sd15"], "cuda" if not torch.cuda.is_available() else "needs --weights"),
])
def test_generate_bad_full_size_input_is_one_line_and_writes_nothing(weights, copy, tmp_path, capsys, args,
                                                                     message):
    shutil.rmtree(copy / "i2v" / "motion_adapter")
    args = [a.format(weights=weights, broken=copy) for a in args]
    out = tmp_path / "run"
    assert _cli("generate", "a red ball", "--out", str(out), "--quiet", *args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists() or not (out / "final.mp4").exists()


def test_stage_commands_take_the_full_size_folder(weights, tmp_path, capsys):
    from magicvideo.media import read_video, write_image

    write_image(tmp_path / "ref.png", torch.rand(3, 48, 48))
    keyframes, hires = str(tmp_path / "k.mp4"), str(tmp_path / "h.mp4")
    assert _cli("i2v", "a red ball", "--image", str(tmp_path / "ref.png"), "-o", keyframes, "--frames", "2",
                "--preset", "sd15", "--weights", str(weights), "--device", "cpu", "--quiet") == 0
    assert _cli("v2v", "a red ball", keyframes, "--image", str(tmp_path / "ref.png"), "-o", hires, "--size", "40",
                "--preset", "sd15", "--weights", str(weights), "--quiet") == 2
    assert "multiple of 16" in capsys.readouterr().err
    assert _cli("v2v", "a red ball", keyframes, "--image", str(tmp_path / "ref.png"), "-o", hires, "--steps", "2",
                "--preset", "sd15", "--weights", str(weights), "--device", "cpu", "--quiet") == 0
    assert read_video(keyframes)[0].shape == (3, 2, 32, 32) and read_video(hires)[0].shape == (3, 2, 64, 64)


def test_a_stage_json_leaving_settings_out_gets_the_full_size_defaults_and_ifnet(copy):
    from magicvideo.pipeline import MagicVideoPipeline

    (copy / "i2v" / "stage.json").write_text("{}")
    (copy / "v2v" / "stage.json").write_text('{"steps": 3}')
    pipe = MagicVideoPipeline.from_preset("sd15", copy)
    assert (pipe.i2v.settings.size, pipe.i2v.settings.frames, pipe.i2v.settings.guidance) == (512, 16, 7.5)
    assert (pipe.v2v.settings.size, pipe.v2v.settings.steps) == (1024, 3)  # the file's own value kept
    assert pipe.vfi.method == "ifnet"  # the shipped EDSC head learnt the synthetic world, not photos
    (copy / "i2v" / "stage.json").write_text('{"sise": 512}')
    with pytest.raises(ValueError, match="unknown I2VSettings setting 'sise'"):
        load_i2v("sd15", copy)


def test_the_cascade_holds_one_unet_vae_and_text_encoder_when_stage_2_borrows_them(weights):
    from magicvideo.pipeline import MagicVideoPipeline
    from magicvideo.presets.sd15 import share_parts

    separate = MagicVideoPipeline.from_preset("sd15", weights)
    t2i, i2v = load_t2i("sd15", weights), load_i2v("sd15", weights)
    before = t2i("a red ball", seed=0, steps=2, size=32).images
    freed = share_parts(t2i, i2v, weights)
    shared = t2i.pipeline
    assert shared.vae is i2v.vae and shared.text_encoder is i2v.text_encoder.model
    name = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight"
    assert shared.unet.get_parameter(name) is i2v.unet.get_parameter(name)
    unet_bytes = sum(p.numel() * p.element_size() for p in shared.unet.parameters())
    assert freed >= unet_bytes  # the whole spatial UNet, plus the VAE and text encoder
    torch.testing.assert_close(t2i("a red ball", seed=0, steps=2, size=32).images, before)  # the same images
    assert separate.t2i.pipeline.vae is separate.i2v.vae  # from_preset shares them


def test_a_folder_of_fp16_variant_files_only_loads(weights, tmp_path):
    """A hub download with variant="fp16" leaves diffusion_pytorch_model.fp16.safetensors and no
    plain file: the layout check passes it, and the loaders must ask for the variant."""
    from magicvideo.stages.parts import variant

    folder = shutil.copytree(weights, tmp_path / "fp16")
    for f in list(folder.rglob("*.safetensors")):
        if f.parent.name != "appearance" or f.name != "branch.safetensors":
            f.rename(f.with_name(f.name.replace(".safetensors", ".fp16.safetensors")))
    assert variant(folder / "t2i" / "unet") == {"variant": "fp16"} and variant(weights / "t2i" / "unet") == {}
    check_folder(folder)
    assert load_t2i("sd15", folder)("a red ball", steps=1, size=32).images.shape == (1, 3, 32, 32)
    stage = load_i2v("sd15", folder)
    assert load_v2v("sd15", folder, i2v=stage).settings.size == 64
