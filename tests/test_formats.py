"""Public checkpoint formats, built at tiny size with their real key names: AnimateDiff's
original motion modules and kohya / diffusers LoRAs, each checked against diffusers' own loaders."""

from __future__ import annotations

import copy

import pytest
import torch
from diffusers import MotionAdapter, StableDiffusionPipeline
from safetensors.torch import save_file

from magicvideo.cli import main
from magicvideo.errors import WeightsError
from magicvideo.formats import LoraFile, fuse_loras, load_motion_adapter, lora_host, motion_adapter_config
from tiny_components import (
    animatediff_original,
    clip_text_model,
    clip_tokenizer,
    kohya_lora,
    tiny_sd_pipeline,
    tiny_unet,
)


def _adapter(mid: bool = True) -> MotionAdapter:
    torch.manual_seed(0)  # 8 heads: what every public SD1.5 module has, and what the config reader assumes
    return MotionAdapter(block_out_channels=(32, 64), motion_layers_per_block=2, motion_num_attention_heads=8,
                         motion_max_seq_length=24, use_motion_mid_block=mid)


@pytest.mark.parametrize("suffix", [".ckpt", ".safetensors"])
@pytest.mark.parametrize("mid", [True, False])  # v2 has a mid block; v1 and v3 do not
def test_an_original_animatediff_file_loads_as_the_adapter_it_was(tmp_path, suffix, mid):
    adapter = _adapter(mid)
    original = animatediff_original(adapter)
    path = tmp_path / f"mm_sd_v15{suffix}"
    torch.save(original, path) if suffix == ".ckpt" else save_file(original, path)
    config = motion_adapter_config(original)
    assert config["block_out_channels"] == [32, 64] and config["motion_layers_per_block"] == 2
    assert config["motion_max_seq_length"] == 24 and config["use_motion_mid_block"] is mid
    loaded = load_motion_adapter(path)
    for key in ("block_out_channels", "motion_layers_per_block", "motion_num_attention_heads", "use_motion_mid_block",
                "motion_max_seq_length"):
        assert list(loaded.config[key]) == list(adapter.config[key]) if key == "block_out_channels" else \
            loaded.config[key] == adapter.config[key]
    mine, theirs = loaded.state_dict(), adapter.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in theirs)
    adapter.save_pretrained(tmp_path / "folder")  # a diffusers folder loads as it is
    assert load_motion_adapter(tmp_path / "folder").state_dict().keys() == theirs.keys()


def test_files_that_are_not_motion_modules_are_refused_in_one_line(tmp_path):
    save_file({"conv_in.weight": torch.zeros(4, 4)}, tmp_path / "unet.safetensors")
    with pytest.raises(WeightsError, match="not an AnimateDiff motion module"):
        load_motion_adapter(tmp_path / "unet.safetensors")
    torch.save({"model": torch.nn.Linear(2, 2)}, tmp_path / "pickled.ckpt")  # a pickled module: code, not tensors
    with pytest.raises(WeightsError, match="not a tensors-only checkpoint|not a state dict"):
        load_motion_adapter(tmp_path / "pickled.ckpt")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(WeightsError, match="not a checkpoint file"):
        load_motion_adapter(tmp_path / "notes.txt")


def test_lora_file_argument_takes_an_optional_scale():
    assert LoraFile.parse("style.safetensors") == LoraFile(__import__("pathlib").Path("style.safetensors"), 1.0)
    assert LoraFile.parse("a:b/style.safetensors:0.6").scale == 0.6
    assert str(LoraFile.parse("a:b/style.safetensors:0.6").path) == "a:b/style.safetensors"
    assert LoraFile.parse("C:/loras/style.safetensors").scale == 1.0


@pytest.fixture()
def sd(tmp_path):
    return StableDiffusionPipeline.from_pretrained(tiny_sd_pipeline(tmp_path), safety_checker=None)


def test_a_kohya_lora_fuses_as_diffusers_loads_it(sd, tmp_path):
    state = kohya_lora(sd.unet, sd.text_encoder)
    save_file(state, tmp_path / "style.safetensors")
    unet, text = copy.deepcopy(sd.unet), copy.deepcopy(sd.text_encoder)
    fuse_loras(lora_host(unet, text), [LoraFile(tmp_path / "style.safetensors", 0.5)])
    assert not any("lora" in k for k in unet.state_dict()), "fused: no peft layers left"
    # the arithmetic: W + scale * alpha / rank * up @ down
    name = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"
    key = "lora_unet_" + name.replace(".", "_")
    expected = sd.unet.get_submodule(name).weight + 0.5 * 2.0 / 4 * state[key + ".lora_up.weight"] @ \
        state[key + ".lora_down.weight"]
    torch.testing.assert_close(unet.get_submodule(name).weight, expected)
    # against diffusers' own pipeline loader, with the adapter weight as the scale
    sd.load_lora_weights(str(tmp_path / "style.safetensors"), adapter_name="style")
    sd.set_adapters(["style"], [0.5])
    x, t = torch.randn(1, 4, 8, 8), torch.tensor([500])
    ids = sd.tokenizer(["a red ball"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(text(ids)[0], sd.text_encoder(ids)[0], atol=1e-5, rtol=1e-4)
        states = sd.text_encoder(ids)[0]
        torch.testing.assert_close(unet(x, t, states).sample, sd.unet(x, t, states).sample, atol=1e-5, rtol=1e-4)


def test_a_lora_for_another_model_is_refused_not_ignored(sd, tmp_path):
    other = tiny_unet(32)
    other.get_submodule("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q")  # exists in both
    bigger = copy.deepcopy(other)
    state = kohya_lora(bigger)
    state = {k.replace("down_blocks_1_attentions_0", "down_blocks_1_attentions_7"): v for k, v in state.items()}
    save_file(state, tmp_path / "other.safetensors")
    with pytest.raises(WeightsError, match="does not fit"):
        fuse_loras(lora_host(copy.deepcopy(sd.unet)), [LoraFile(tmp_path / "other.safetensors")])
    save_file(kohya_lora(sd.unet, sd.text_encoder), tmp_path / "with_text.safetensors")
    with pytest.raises(WeightsError, match="CLIP text encoder"):
        fuse_loras(lora_host(copy.deepcopy(sd.unet), None), [LoraFile(tmp_path / "with_text.safetensors")])
    save_file({"something.weight": torch.zeros(2)}, tmp_path / "empty.safetensors")
    with pytest.raises(WeightsError, match="no LoRA weights"):
        fuse_loras(lora_host(copy.deepcopy(sd.unet)), [LoraFile(tmp_path / "empty.safetensors")])


def test_sd15_stages_take_loras_from_the_command_line(tmp_path, capsys):
    tokenizer = clip_tokenizer(tmp_path / "tok")
    save_file(kohya_lora(tiny_unet(32), clip_text_model(tokenizer)), tmp_path / "style.safetensors")
    folder = tiny_sd_pipeline(tmp_path)
    plain, styled = tmp_path / "plain.png", tmp_path / "styled.png"
    common = ["a red ball", "--preset", "sd15", "--weights", str(folder), "--steps", "2", "--size", "32", "--quiet"]
    assert main(["t2i", *common, "-o", str(plain)]) == 0
    assert main(["t2i", *common, "-o", str(styled), "--lora", f"{tmp_path / 'style.safetensors'}:1.5"]) == 0
    from magicvideo.media import read_image

    assert (read_image(plain) - read_image(styled)).abs().max() > 0.01  # the LoRA changed the image
    capsys.readouterr()
    assert main(["t2i", *common, "-o", str(styled), "--lora", str(tmp_path / "missing.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no LoRA file" in err


def test_stage_2_fuses_a_lora_into_its_spatial_unet_before_the_motion_modules(tmp_path):
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    from magicvideo.presets import load_i2v
    from magicvideo.presets.sd15 import write_random
    from tiny_components import small_sd15_shapes

    weights = write_random(tmp_path / "w", small_sd15_shapes(), dtype=torch.float32, progress=False)
    unet = UNet2DConditionModel.from_pretrained(weights / "t2i" / "unet")
    text = CLIPTextModel.from_pretrained(weights / "t2i" / "text_encoder")
    save_file(kohya_lora(unet, text), tmp_path / "style.safetensors")
    host = lora_host(unet, text)
    fuse_loras(host, [LoraFile(tmp_path / "style.safetensors", 0.8)])
    stage = load_i2v("sd15", weights, loras=[LoraFile(tmp_path / "style.safetensors", 0.8)])
    name = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_v"
    torch.testing.assert_close(stage.unet.get_submodule(name).weight, unet.get_submodule(name).weight)
    assert not torch.equal(stage.unet.get_submodule(name).weight,
                           UNet2DConditionModel.from_pretrained(weights / "t2i" / "unet").get_submodule(name).weight)
    layer = "encoder.layers.1.mlp.fc2"
    torch.testing.assert_close(stage.text_encoder.model.get_submodule(layer).weight, text.get_submodule(layer).weight)


def test_an_ip_adapter_file_becomes_the_appearance_branch_diffusers_builds_from_it(sd, tmp_path):
    from magicvideo.formats import ip_adapter_appearance
    from magicvideo.models.appearance import BRANCH_FILE, AppearanceProjection, appearance_processors, attach_appearance
    from tiny_components import ip_adapter_weights

    save_file(ip_adapter_weights(sd.unet), tmp_path / "ip-adapter_sd15.safetensors")
    folder = ip_adapter_appearance(tmp_path / "ip-adapter_sd15.safetensors", dict(sd.unet.config), tmp_path / "app")
    ours = copy.deepcopy(sd.unet)
    projection = AppearanceProjection.from_pretrained(folder)
    attach_appearance(ours, projection.config.num_tokens)
    from safetensors.torch import load_file

    appearance_processors(ours).load_state_dict(load_file(folder / BRANCH_FILE))
    sd.load_ip_adapter(str(tmp_path), subfolder="", weight_name="ip-adapter_sd15.safetensors",
                       image_encoder_folder=None)
    theirs = sd.unet.attn_processors
    for name, processor in ours.attn_processors.items():
        if name.endswith("attn2.processor"):
            for kind in ("to_k_ip", "to_v_ip"):
                torch.testing.assert_close(getattr(processor, kind)[0].weight, getattr(theirs[name], kind)[0].weight)
    layer = sd.unet.encoder_hid_proj.image_projection_layers[0]
    embeds = torch.randn(2, 16)
    with torch.no_grad():
        torch.testing.assert_close(projection(embeds), layer(embeds))


def test_an_ip_adapter_plus_file_becomes_the_resampler_diffusers_builds_from_it(sd, tmp_path):
    from safetensors.torch import load_file

    from magicvideo.formats import ip_adapter_appearance
    from magicvideo.models.appearance import BRANCH_FILE, AppearanceResampler, CLIPAppearanceEncoder
    from tiny_components import clip_image_encoder, ip_adapter_plus_weights

    save_file(ip_adapter_plus_weights(sd.unet), tmp_path / "ip-adapter-plus_sd15.safetensors")
    folder = ip_adapter_appearance(tmp_path / "ip-adapter-plus_sd15.safetensors", dict(sd.unet.config),
                                   tmp_path / "app")
    ours = AppearanceResampler.from_pretrained(folder)
    assert ours.config.num_tokens == 4 and ours.config.embed_dim == 32
    sd.load_ip_adapter(str(tmp_path), subfolder="", weight_name="ip-adapter-plus_sd15.safetensors",
                       image_encoder_folder=None)
    theirs = sd.unet.encoder_hid_proj.image_projection_layers[0]
    assert type(theirs).__name__ == "IPAdapterPlusImageProjection"
    hidden = torch.randn(2, 17, 32)  # a 32x32 image in 8x8 patches and the class token
    with torch.no_grad():
        torch.testing.assert_close(ours(hidden), theirs(hidden))
    branch = load_file(folder / BRANCH_FILE)
    name = sorted(n for n in sd.unet.attn_processors if n.endswith("attn2.processor"))[0]
    torch.testing.assert_close(branch["0.to_k_ip.0.weight"], sd.unet.attn_processors[name].to_k_ip[0].weight)
    # the encoder reads CLIP's penultimate hidden states, and the unguided branch a zero image's, as diffusers
    encoder = CLIPAppearanceEncoder(clip_image_encoder(), ours)
    images = torch.rand(2, 3, 48, 40)
    with torch.no_grad():
        pixels = encoder.pixels(images)
        want = theirs(encoder.image_encoder(pixels, output_hidden_states=True).hidden_states[-2])
        zero = theirs(encoder.image_encoder(torch.zeros_like(pixels), output_hidden_states=True).hidden_states[-2])
        torch.testing.assert_close(encoder(images), want)
        torch.testing.assert_close(encoder.unconditional(2), zero)


def test_other_ip_adapter_files_are_refused_in_one_line(sd, tmp_path):
    from magicvideo.formats import ip_adapter_appearance
    from tiny_components import ip_adapter_weights

    short = {k: v for k, v in ip_adapter_weights(sd.unet).items() if not k.startswith("ip_adapter.1.")}
    save_file(short, tmp_path / "short.safetensors")
    with pytest.raises(WeightsError, match="does not fit this UNet"):
        ip_adapter_appearance(tmp_path / "short.safetensors", dict(sd.unet.config), tmp_path / "b")


def test_clip_appearance_preprocesses_as_clip_image_processor_and_guides_against_a_zero_embedding():
    from PIL import Image
    from transformers import CLIPImageProcessor

    from magicvideo.models.appearance import AppearanceProjection, CLIPAppearanceEncoder
    from tiny_components import clip_image_encoder

    encoder = CLIPAppearanceEncoder(clip_image_encoder(), AppearanceProjection(16, num_tokens=2, dim=32))
    image = torch.rand(1, 3, 48, 80)  # not square: cropped to the centre, not squashed
    rgb = (image[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    reference = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    torch.testing.assert_close(encoder.pixels(image), reference(images=Image.fromarray(rgb), return_tensors="pt")
                               .pixel_values)
    with torch.no_grad():
        zero = encoder.projection(torch.zeros(3, 16))
        torch.testing.assert_close(encoder.unconditional(3), zero)


def test_the_safety_checker_is_off_unless_asked_and_says_what_it_blacks_out(tmp_path):
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    from magicvideo.stages.t2i import DiffusersTextToImage

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_pipeline(tmp_path), safety_checker=None)
    torch.manual_seed(0)
    vision = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=32,
                  patch_size=8)
    checker = StableDiffusionSafetyChecker(CLIPConfig(text_config=dict(hidden_size=32, intermediate_size=37,
                                                                       num_hidden_layers=1, num_attention_heads=4),
                                                      vision_config=vision, projection_dim=16))
    with torch.no_grad():
        checker.concept_embeds_weights.fill_(-10.0)  # every image crosses every concept's threshold
    pipe.register_modules(safety_checker=checker, feature_extractor=CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}))
    pipe.register_to_config(requires_safety_checker=True)
    pipe.save_pretrained(tmp_path / "with_checker")
    off = DiffusersTextToImage.from_pretrained(tmp_path / "with_checker")
    assert off.pipeline.safety_checker is None
    assert off("a red ball", steps=1, size=32).flagged == ()
    on = DiffusersTextToImage.from_pretrained(tmp_path / "with_checker", safety_checker=True)
    out = on("a red ball", steps=1, size=32)
    assert out.flagged == (True,) and out.images.abs().max() == 0  # blacked, and said so


def test_an_ip_adapter_bin_of_nested_dicts_reads_as_its_safetensors(sd, tmp_path):
    from safetensors.torch import load_file

    from magicvideo.formats import ip_adapter_appearance
    from magicvideo.models.appearance import BRANCH_FILE
    from tiny_components import ip_adapter_weights

    flat = ip_adapter_weights(sd.unet)
    nested = {part: {k.removeprefix(part + "."): v for k, v in flat.items() if k.startswith(part + ".")}
              for part in ("image_proj", "ip_adapter")}
    torch.save(nested, tmp_path / "ip-adapter_sd15.bin")
    save_file(flat, tmp_path / "ip-adapter_sd15.safetensors")
    a = ip_adapter_appearance(tmp_path / "ip-adapter_sd15.bin", dict(sd.unet.config), tmp_path / "a")
    b = ip_adapter_appearance(tmp_path / "ip-adapter_sd15.safetensors", dict(sd.unet.config), tmp_path / "b")
    mine, theirs = load_file(a / BRANCH_FILE), load_file(b / BRANCH_FILE)
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in theirs)
