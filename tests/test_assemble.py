"""`magicvideo sd15 assemble`: the full-size folder from public files (tiny stand-ins in each
format's real layout), then `generate --preset sd15` on it."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import MotionAdapter, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextModel

from magicvideo.cli import main
from magicvideo.presets.sd15 import write_random
from tiny_components import (
    animatediff_original,
    ip_adapter_weights,
    kohya_lora,
    ldm_unet_state,
    sd15_single_file,
    small_sd15_shapes,
)


@pytest.fixture(scope="module")
def public(tmp_path_factory):
    """What a user's disk holds, in public formats: a diffusers base, AnimateDiff's original
    motion-module file, ControlNet folders, an IP-Adapter file with its image encoder, a kohya LoRA."""
    root = tmp_path_factory.mktemp("public")
    small = write_random(root / "small", small_sd15_shapes(), dtype=torch.float32, progress=False)
    unet = UNet2DConditionModel.from_pretrained(small / "t2i" / "unet")
    adapter = MotionAdapter.from_pretrained(small / "i2v" / "motion_adapter")
    save_file(animatediff_original(adapter), root / "mm_sd_v15_v2.safetensors")
    save_file(ip_adapter_weights(unet, embed_dim=16, tokens=2), root / "ip-adapter_sd15.safetensors")
    text = CLIPTextModel.from_pretrained(small / "t2i" / "text_encoder")
    save_file(kohya_lora(unet, text), root / "style.safetensors")
    from diffusers import ControlNetModel, StableDiffusionPipeline

    base = StableDiffusionPipeline.from_pretrained(small / "t2i")
    save_file({k: v.contiguous() for k, v in sd15_single_file(base).items()}, root / "community_model.safetensors")
    control = ControlNetModel.from_pretrained(small / "i2v" / "controlnet")
    torch.save({f"control_model.{k}": v for k, v in ldm_unet_state(control.state_dict(), dict(control.config)).items()},
               root / "control_v11f1e_sd15_tile.pth")
    return root, small


def _assemble(public, out, *extra):
    root, small = public
    return main(["sd15", "assemble", str(out), "--base", str(small / "t2i"),
                 "--motion-adapter", str(root / "mm_sd_v15_v2.safetensors"), *extra])


def test_assembled_folder_runs_the_cascade(public, tmp_path, capsys):
    root, small = public
    out = tmp_path / "sd15"
    assert _assemble(public, out, "--controlnet", str(small / "i2v" / "controlnet"),
                     "--v2v-controlnet", str(small / "v2v" / "controlnet"),
                     "--ip-adapter", str(root / "ip-adapter_sd15.safetensors"),
                     "--image-encoder", str(small / "i2v" / "image_encoder"),
                     "--lora", f"{root / 'style.safetensors'}:0.7") == 0
    said = capsys.readouterr().out
    assert "converted from mm_sd_v15_v2.safetensors" in said and "stage 2's (no --v2v-motion-adapter" in said
    assert (out / "t2i").is_symlink() and (out / "i2v" / "appearance" / "branch.safetensors").is_file()
    assert json.loads((out / "loras.json").read_text()) == [{"file": "loras/0_style.safetensors", "scale": 0.7}]
    assert json.loads((out / "i2v" / "stage.json").read_text())["size"] == 512  # the full-size defaults
    run = tmp_path / "run"
    assert main(["generate", "a red ball", "--preset", "sd15", "--weights", str(out), "--out", str(run),
                 "--frames", "3", "--t2i-size", "32", "--t2i-steps", "1", "--i2v-size", "32", "--i2v-steps", "1",
                 "--v2v-size", "64", "--v2v-steps", "1", "--device", "cpu", "--quiet"]) == 0
    assert (run / "final.mp4").is_file()
    from magicvideo.presets import load_t2i

    name = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_q"
    fused = load_t2i("sd15", out).pipeline.unet.get_submodule(name).weight
    base = UNet2DConditionModel.from_pretrained(small / "t2i" / "unet").get_submodule(name).weight
    assert not torch.allclose(fused, base)  # the folder's LoRA is fused whenever it loads


def test_an_ip_adapter_plus_assembles_and_animates(public, tmp_path):
    from tiny_components import SD15_KEYFRAMES, ip_adapter_plus_weights

    root, small = public
    unet = UNet2DConditionModel.from_pretrained(small / "t2i" / "unet")
    hidden = json.loads((small / "i2v" / "image_encoder" / "config.json").read_text())["hidden_size"]
    save_file(ip_adapter_plus_weights(unet, embed_dim=hidden), tmp_path / "ip-adapter-plus_sd15.safetensors")
    out = tmp_path / "sd15"
    assert _assemble(public, out, "--ip-adapter", str(tmp_path / "ip-adapter-plus_sd15.safetensors"),
                     "--image-encoder", str(small / "i2v" / "image_encoder")) == 0
    config = json.loads((out / "i2v" / "appearance" / "config.json").read_text())
    assert config["_class_name"] == "AppearanceResampler" and config["embed_dim"] == hidden
    run = tmp_path / "run"
    assert main(["generate", "a red ball", "--weights", str(out), "--out", str(run), *SD15_KEYFRAMES]) == 0
    assert (run / "keyframes.mp4").is_file()


def test_a_rife_4_file_assembles_and_interpolates_the_cascade(public, tmp_path, capsys):
    from tiny_components import rife_release

    rife_release(tmp_path / "flownet.pkl", widths=(16, 8, 8, 8, 8), encoder_width=8)
    out = tmp_path / "sd15"
    assert _assemble(public, out, "--rife", str(tmp_path / "flownet.pkl")) == 0
    assert "vfi: flownet.pkl (IFNet4)" in capsys.readouterr().out
    from magicvideo.pipeline import MagicVideoPipeline

    pipe = MagicVideoPipeline.from_preset("sd15", out)
    assert pipe.vfi.method == "ifnet" and type(pipe.vfi.ifnet).__name__ == "IFNet4"
    assert pipe.vfi(torch.rand(3, 3, 32, 32), times=2).frames.shape == (3, 5, 32, 32)
    (tmp_path / "bad.pkl").write_text("not weights")
    assert _assemble(public, tmp_path / "no", "--rife", str(tmp_path / "bad.pkl")) == 2
    assert not (tmp_path / "no").exists()


def test_assemble_says_what_is_left_out_and_checks_before_writing(public, tmp_path, capsys):
    root, small = public
    out = tmp_path / "bare"
    assert _assemble(public, out) == 0
    said = capsys.readouterr().out
    assert "stage 2 runs without its ControlNet" in said and "without the appearance encoder" in said
    capsys.readouterr()
    for args, message in [
        (["--ip-adapter", str(root / "ip-adapter_sd15.safetensors")], "go together"),
        (["--controlnet", str(root / "nowhere")], "does not exist"),
        (["--lora", str(root / "missing.safetensors")], "no LoRA file"),
    ]:
        again = tmp_path / "again"
        assert _assemble(public, again, *args) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
        assert not again.exists() and not list(tmp_path.glob(".again*"))
    assert main(["sd15", "assemble", str(tmp_path / "x"), "--base", str(root / "community_model.safetensors"),
                 "--motion-adapter", str(root / "mm_sd_v15_v2.safetensors")]) == 2
    assert "give --config DIR" in capsys.readouterr().err  # a single file holds no configs or tokenizer
    assert not (tmp_path / "x").exists()
    assert _assemble(public, out) == 2  # not over a folder that holds something
    assert "not empty" in capsys.readouterr().err


def test_single_file_base_and_controlnet_convert_to_the_same_weights(public, tmp_path, capsys):
    from diffusers import ControlNetModel

    root, small = public
    out = tmp_path / "from_files"
    assert main(["sd15", "assemble", str(out), "--base", str(root / "community_model.safetensors"),
                 "--config", str(small / "t2i"), "--motion-adapter", str(root / "mm_sd_v15_v2.safetensors"),
                 "--controlnet", str(root / "control_v11f1e_sd15_tile.pth")]) == 0
    said = capsys.readouterr().out
    assert "converted from community_model.safetensors" in said and "converted from control_v11f1e" in said
    for part in ("unet", "vae", "text_encoder"):
        folder = (out / "t2i" / part, small / "t2i" / part)
        a, b = (json.loads((f / "config.json").read_text()) for f in folder)
        from safetensors.torch import load_file

        mine, theirs = (load_file(next(f.glob("*.safetensors"))) for f in folder)
        assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in theirs), part
    mine = ControlNetModel.from_pretrained(out / "i2v" / "controlnet").state_dict()
    theirs = ControlNetModel.from_pretrained(small / "i2v" / "controlnet").state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in theirs)
