import pytest
import torch

from magicvideo.diffusion.schedule import initial_noise
from magicvideo.errors import PromptError
from magicvideo.presets import load_t2i
from magicvideo.stages.t2i import DiffusersTextToImage, T2ISettings, TextToImage
from magicvideo.text import MiniLMTextEncoder
from tiny_components import tiny_sd_pipeline, tiny_unet, tiny_vae


@pytest.fixture(scope="module")
def stage():
    """Our stage 1 with random-init tiny UNet and VAE (8x) and the real MiniLM."""
    return TextToImage(tiny_unet(384), tiny_vae(levels=4), MiniLMTextEncoder.from_pretrained(),
                       T2ISettings(size=32, steps=3))


def test_images_shape_range_and_determinism(stage):
    a = stage("a red circle over a meadow", seed=1).images
    assert a.shape == (1, 3, 32, 32) and a.dtype == torch.float32
    assert 0 <= a.min() and a.max() <= 1
    torch.testing.assert_close(stage("a red circle over a meadow", seed=1).images, a, atol=0, rtol=0)
    assert not torch.equal(stage("a red circle over a meadow", seed=2).images, a)


def test_the_latent_grid_is_read_from_the_vae():
    from magicvideo.latent import size_multiple, vae_factor

    four = TextToImage(tiny_unet(384), tiny_vae(levels=3), MiniLMTextEncoder.from_pretrained(),
                       T2ISettings(size=24, steps=2))
    assert vae_factor(four.vae) == 4 and vae_factor(tiny_vae(levels=4).config) == 8
    assert size_multiple({"block_out_channels": [32, 64, 128]}, four.vae) == 16
    assert four("a red circle over a meadow").images.shape == (1, 3, 24, 24)  # 6x6 latents
    with pytest.raises(ValueError, match="multiples of 4"):
        four("a red circle over a meadow", size=30)


def test_an_items_noise_does_not_depend_on_the_batch(stage):
    both = stage(["a red circle over a meadow", "a blue star over a sunset"], seed=[1, 5]).images
    alone = stage("a blue star over a sunset", seed=5).images
    torch.testing.assert_close(both[1:], alone, atol=1e-5, rtol=1e-4)
    assert torch.equal(initial_noise([3, 3], (4, 2, 2))[0], initial_noise([3], (4, 2, 2))[0])


def test_guidance_changes_the_image_and_one_turns_it_off(stage):
    g1 = stage("a red circle over a meadow", guidance=1.0).images
    g4 = stage("a red circle over a meadow", guidance=4.0).images
    assert not torch.allclose(g1, g4)


def test_save_and_load_round_trip(stage, tmp_path):
    stage.save_pretrained(tmp_path / "t2i")
    again = TextToImage.from_pretrained(tmp_path / "t2i")
    assert again.settings == stage.settings
    torch.testing.assert_close(again("a pink heart over the night sky").images,
                               stage("a pink heart over the night sky").images, atol=1e-5, rtol=1e-4)
    # through the preset too: a folder's own UNet and VAE come before the shipped ones
    preset = load_t2i("tiny", tmp_path / "t2i")
    assert list(preset.unet.config.block_out_channels) == list(stage.unet.config.block_out_channels)
    torch.testing.assert_close(preset("a pink heart over the night sky").images,
                               stage("a pink heart over the night sky").images, atol=1e-5, rtol=1e-4)


def test_bad_input_fails_before_any_work(stage, tmp_path):
    with pytest.raises(ValueError, match="multiples of 8"):
        stage("a red circle over a meadow", size=36)
    with pytest.raises(PromptError, match="empty"):
        stage("")
    with pytest.raises(ValueError, match="at least 1"):
        stage("a red circle over a meadow", steps=0)
    with pytest.raises(FileNotFoundError, match="stage.json"):
        TextToImage.from_pretrained(tmp_path)
    stage.save_pretrained(tmp_path / "t2i")
    (tmp_path / "t2i" / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="vae/diffusion_pytorch_model.safetensors"):
        TextToImage.from_pretrained(tmp_path / "t2i")


def test_a_fused_lora_gives_what_it_gave_unfused_and_a_new_one_changes_nothing():
    from magicvideo.models.lora import attach_lora, fuse_lora, lora_parameters
    from magicvideo.stages.t2i import LORA_NAME, LORA_TARGETS

    unet = tiny_unet(384).eval()
    x, t, text = torch.randn(2, 4, 8, 8), torch.tensor([10, 700]), torch.randn(2, 5, 384)
    with torch.no_grad():
        plain = unet(x, t, text).sample
        params = attach_lora(unet, LORA_NAME, LORA_TARGETS, rank=2)
        assert torch.equal(unet(x, t, text).sample, plain)  # B starts at zero
        for p in params:
            p.normal_(std=0.1)
        unfused = unet(x, t, text).sample
        assert not torch.allclose(unfused, plain, atol=1e-3)
        fused = fuse_lora(unet)(x, t, text).sample
    assert not lora_parameters(unet, LORA_NAME) and not any("base_layer" in k for k in unet.state_dict())
    torch.testing.assert_close(fused, unfused, atol=1e-5, rtol=1e-4)


def test_a_shipped_lora_is_applied_over_the_shipped_unet(tmp_path, monkeypatch):
    from diffusers import UNet2DConditionModel

    from magicvideo.models.lora import attach_lora, save_lora
    from magicvideo.presets import tiny
    from magicvideo.presets.tiny import TINY_UNET
    from magicvideo.stages.t2i import LORA_FILE, LORA_NAME, LORA_TARGETS

    base = UNet2DConditionModel.from_pretrained(TINY_UNET)
    for p in attach_lora(base, LORA_NAME, LORA_TARGETS, rank=1):
        p.data.normal_(std=0.05)
    save_lora(base, LORA_NAME, tmp_path / LORA_FILE, dtype=torch.float16)
    monkeypatch.setattr(tiny, "TINY_T2I", tmp_path)
    plain = UNet2DConditionModel.from_pretrained(TINY_UNET).state_dict()
    tuned = load_t2i().unet.state_dict()
    assert tuned.keys() == plain.keys()
    moved = [k for k in plain if not torch.equal(plain[k], tuned[k])]
    assert moved and all(k.endswith("weight") for k in moved)


def test_text_width_must_match_the_unet():
    with pytest.raises(ValueError, match="384"):
        TextToImage(tiny_unet(32), tiny_vae(levels=4), MiniLMTextEncoder.from_pretrained())


def test_any_diffusers_pipeline_from_a_local_folder(tmp_path):
    folder = tiny_sd_pipeline(tmp_path)
    t2i = DiffusersTextToImage.from_pretrained(folder, steps=2)
    out = t2i("a red circle", seed=3, size=16).images
    assert out.shape == (1, 3, 16, 16) and 0 <= out.min() and out.max() <= 1
    torch.testing.assert_close(t2i("a red circle", seed=3, size=16).images, out, atol=0, rtol=0)
    t2i.save_pretrained(tmp_path / "copy")
    again = DiffusersTextToImage.from_pretrained(tmp_path / "copy", steps=2)
    torch.testing.assert_close(again("a red circle", seed=3, size=16).images, out, atol=1e-5, rtol=1e-4)
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        DiffusersTextToImage.from_pretrained(tmp_path)
    with pytest.raises(PromptError):
        t2i(" ")


# ---------------------------------------------------------------- the shipped tiny weights
@pytest.fixture(scope="module")
def shipped():
    return load_t2i()


def test_judged_stills_score_the_truth_right_and_bare_backgrounds_wrong():
    from magicvideo.judge.judge import read_clip
    from magicvideo.judge.t2i import ground_truth_accuracy, judge_images, object_count
    from magicvideo.world import draw_clip, render_background, render_frames

    assert ground_truth_accuracy("heldout", 4, seed=5, size=128)["all"] == 1.0
    clips = [draw_clip(5, "heldout", i) for i in range(4)]
    truth = [render_frames(c.scene, 128, [0.0])[:, 0] for c in clips]
    count = object_count(clips, [read_clip(image) for image in truth])
    assert count["found"] == count["named"] >= 1 and count["too_many"] == 0
    doubled = [torch.cat([image[:, :, 64:], image[:, :, 64:]], 2) for image in truth]  # one half twice
    assert object_count(clips, [read_clip(image) for image in doubled])["found"] != count["found"]
    bare = judge_images(clips, [render_background(c.scene.background, 0, 128) for c in clips])["accuracy"]
    assert bare["shape"] == 0.0 and bare["colour"] == 0.0 and bare["background"] >= 0.75


def test_shipped_stage_draws_what_the_prompt_says(shipped):
    """A trained model beats its baseline: the judge reads the prompt back off its images far more
    often than off images of the empty prompt."""
    from magicvideo.judge.t2i import evaluate_t2i, judge_images
    from magicvideo.world import draw_clip

    trained = evaluate_t2i(shipped, "train", 8, seed=99, steps=10, batch=8, progress=False)["accuracy"]
    clips = [draw_clip(99, "train", i) for i in range(8)]
    baseline = judge_images(clips, shipped(shipped.text_encoder.empty(8), seed=0, steps=10).images)["accuracy"]
    assert trained["background"] >= 0.75
    assert trained["colour"] + trained["background"] > baseline["colour"] + baseline["background"] + 0.5


def test_cli_t2i_writes_the_image(tmp_path, capsys):
    from magicvideo.cli import main
    from magicvideo.media import read_image

    out = tmp_path / "ref.png"
    assert main(["t2i", "a crimson star drifting to the left over a sunset", "-o", str(out), "--steps", "2",
                 "--quiet"]) == 0
    assert read_image(out).shape == (3, 128, 128) and str(out) in capsys.readouterr().out


def test_cli_t2i_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys):
    from magicvideo.cli import main

    out = str(tmp_path / "ref.png")
    for argv, message in ((["", "-o", out], "empty"), (["a red circle", "-o", out, "--size", "36"], "multiples of 8"),
                          (["a red circle", "-o", str(tmp_path / "ref.txt")], ".png"),
                          (["a red circle", "-o", out, "--steps", "0"], "at least 1"),
                          (["a red circle", "-o", out, "--preset", "sd15"], "--weights"),
                          (["a red circle", "-o", out, "--weights", str(tmp_path)], "stage.json")):
        assert main(["t2i", *argv, "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and message in err, err
    assert not (tmp_path / "ref.png").exists()


def test_a_lora_extracted_from_a_fine_tune_is_its_best_low_rank_copy(tmp_path):
    import re

    from magicvideo.models.lora import extract_lora, fuse_lora, load_lora, save_lora
    from magicvideo.stages.t2i import LORA_NAME, LORA_TARGETS

    base_state = tiny_unet(32).state_dict()
    torch.manual_seed(1)
    tuned = {k: v + 0.1 * torch.randn_like(v) for k, v in base_state.items()}  # a "full fine-tune"
    targeted = [k for k in base_state if k.endswith(".weight") and base_state[k].dim() >= 2
                and re.fullmatch(LORA_TARGETS, k[: -len(".weight")])]
    assert any(base_state[k].dim() == 4 for k in targeted) and any(base_state[k].dim() == 2 for k in targeted)

    full = tiny_unet(32)  # a rank as large as any layer: the targeted layers become the tuned ones exactly
    kept = extract_lora(full, tuned, LORA_NAME, LORA_TARGETS, rank=64 * 9)
    assert min(kept.values()) > 0.999
    save_lora(full, LORA_NAME, tmp_path / "full.safetensors")
    fused = fuse_lora(full).state_dict()
    for k, v in fused.items():
        torch.testing.assert_close(v, tuned[k] if k in targeted else base_state[k], atol=1e-5, rtol=1e-4)

    low = tiny_unet(32)
    kept = extract_lora(low, tuned, LORA_NAME, LORA_TARGETS, rank=2)
    assert max(kept.values()) < 0.9  # random changes are not low-rank
    save_lora(low, LORA_NAME, tmp_path / "low.safetensors")
    weights = fuse_lora(low).state_dict()
    key = targeted[0]
    delta = (tuned[key] - base_state[key]).reshape(len(tuned[key]), -1)
    u, s, vh = torch.linalg.svd(delta, full_matrices=False)
    best = (u[:, :2] * s[:2]) @ vh[:2]
    torch.testing.assert_close((weights[key] - base_state[key]).reshape(best.shape), best, atol=1e-5, rtol=1e-4)

    again = tiny_unet(32)  # the saved file loads back to the same weights
    load_lora(again, LORA_NAME, tmp_path / "low.safetensors")
    for k, v in fuse_lora(again).state_dict().items():
        torch.testing.assert_close(v, weights[k])


def test_cli_extract_lora_writes_a_lora_folder_over_the_base(tmp_path, capsys):
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file

    from magicvideo.cli import main
    from magicvideo.stages.t2i import EXTRACT_TARGETS, VECTORS_FILE

    base = tiny_unet(32)
    base.save_pretrained(tmp_path / "base")
    with torch.no_grad():
        for p in base.parameters():
            p.add_(0.05 * torch.randn_like(p))
    base.save_pretrained(tmp_path / "tuned")
    out = tmp_path / "lora"
    assert main(["extract-lora", str(tmp_path / "tuned"), "-o", str(out), "--rank", "3",
                 "--base", str(tmp_path / "base")]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["base"] == str(tmp_path / "base") and config["rank"] == 3 and config["vae"] is None
    assert config["targets"] == EXTRACT_TARGETS and config["vectors"] is True
    with safe_open(out / "lora.safetensors", "pt") as f:
        assert f.metadata()["rank"] == "3" and all(f.get_tensor(k).dtype == torch.float16 for k in f.keys())
        assert any("time_emb_proj" in k for k in f.keys())  # every matrix, not only LORA_TARGETS
    vectors = load_file(out / VECTORS_FILE)
    tuned = load_file(tmp_path / "tuned" / "diffusion_pytorch_model.safetensors")
    assert vectors.keys() == {k for k, v in tuned.items() if v.dim() == 1}  # the tuned biases and norms, whole
    assert all(torch.equal(v, tuned[k].half()) for k, v in vectors.items())
    assert "rank-3 LoRA" in capsys.readouterr().out
    assert main(["extract-lora", str(tmp_path / "tuned"), "-o", str(out), "--rank", "0"]) == 2
    assert "--rank must be at least 1" in capsys.readouterr().err
    assert main(["extract-lora", str(tmp_path / "base"), "-o", str(out)]) == 2  # the shipped base: other shapes
    assert "not the same architecture" in capsys.readouterr().err


def _fine_tune_run(tmp_path):
    """A tiny base UNet, a "full fine-tune" of it (every weight moved) in a run folder beside
    caches of 24 images and prompts, as `magicvideo train t2i` leaves them."""
    base, tuned = tiny_unet(384), tiny_unet(384)  # MiniLM's width: it loads as a stage
    base.save_pretrained(tmp_path / "base")
    torch.manual_seed(2)
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(0.05 * torch.randn_like(p))
    tuned.save_pretrained(tmp_path / "run" / "final")
    torch.save({"hidden": torch.randn(24, 5, 384).half(), "empty_hidden": torch.zeros(5, 384).half()},
               tmp_path / "run" / "prompts.pt")
    torch.save({"latents": torch.randn(24, 4, 8, 8)}, tmp_path / "run" / "latents.pt")
    return base, tuned


def test_distilled_lora_fits_the_fine_tune_better_than_its_svd_and_loads_as_fitted(tmp_path):
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    from magicvideo.models.lora import fuse_lora, load_lora
    from magicvideo.stages.t2i import LORA_FILE, LORA_NAME, VECTORS_FILE, load_vectors
    from magicvideo.training.t2i import T2IDistillConfig, distill_t2i_lora, gap_probe, prediction_gap

    base, tuned = _fine_tune_run(tmp_path)
    config = T2IDistillConfig(tuned=str(tmp_path / "run" / "final"), base=str(tmp_path / "base"), rank=2,
                              steps=40, batch_size=4, lr=3e-3, probe=8)
    metrics = distill_t2i_lora(config, tmp_path / "lora", progress=False)
    assert 0 < metrics["prediction_gap_distilled"] < 0.8 * metrics["prediction_gap_svd"]
    assert not (tmp_path / "lora" / "distill_state").exists()
    assert "Steps: 40" in (tmp_path / "lora" / "README.md").read_text()

    loaded = UNet2DConditionModel.from_pretrained(tmp_path / "base")  # as TextToImage.from_pretrained applies it
    load_lora(loaded, LORA_NAME, tmp_path / "lora" / LORA_FILE)
    fuse_lora(loaded)
    load_vectors(loaded, tmp_path / "lora" / VECTORS_FILE)
    probe = gap_probe(torch.load(tmp_path / "run" / "latents.pt")["latents"][16:],
                      torch.load(tmp_path / "run" / "prompts.pt")["hidden"][16:])  # the 8 left out of the fit
    gap = prediction_gap(loaded.eval(), tuned.eval(), base.eval(), probe)
    assert abs(gap - metrics["prediction_gap_distilled"]) < 0.05 * metrics["prediction_gap_distilled"] + 1e-3
    stage = load_t2i("tiny", tmp_path / "lora")  # the folder `magicvideo t2i --weights` takes
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in stage.unet.state_dict().items())
    save_file({"conv_in.bias": torch.zeros(7)}, tmp_path / "other.safetensors")  # another UNet's
    with pytest.raises(ValueError, match="does not match this UNet"):
        load_vectors(loaded, tmp_path / "other.safetensors")


def test_distill_without_caches_says_where_they_are_looked_for(tmp_path):
    from magicvideo.training.t2i import T2IDistillConfig, distill_t2i_lora

    _fine_tune_run(tmp_path)
    (tmp_path / "run" / "latents.pt").unlink()
    with pytest.raises(FileNotFoundError, match=r"no training caches .* \(`--data RUN`\)"):
        distill_t2i_lora(T2IDistillConfig(tuned=str(tmp_path / "run" / "final"), base=str(tmp_path / "base")),
                         tmp_path / "lora", progress=False)


def test_shipped_stage_one_is_v0_with_its_lora_fused_and_its_vectors_set():
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file

    from magicvideo.presets.tiny import TINY_T2I_LORA, TINY_UNET
    from magicvideo.stages.t2i import VECTORS_FILE

    state = load_t2i().unet.state_dict()
    v0 = UNet2DConditionModel.from_pretrained(TINY_UNET).state_dict()
    vectors = load_file(TINY_T2I_LORA / VECTORS_FILE)
    assert all(torch.equal(state[k], v.float()) for k, v in vectors.items())
    assert not torch.equal(state["time_embedding.linear_1.weight"], v0["time_embedding.linear_1.weight"])
