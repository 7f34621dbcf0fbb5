"""SparseCtrl (AnimateDiff's public ControlNet on RGB frames, diffusers' SparseControlNetModel) as
stage 2's ControlNet: the reference conditions the first frame, laid out as diffusers' SparseCtrl
pipeline lays it out, and the UNet gets the residuals diffusers' model gives for it."""

import shutil

import pytest
import torch
from diffusers import AnimateDiffSparseControlNetPipeline, SparseControlNetModel, UNet2DConditionModel

from magicvideo.cli import main
from magicvideo.diffusion.video import sparse_condition
from magicvideo.presets import load_i2v
from magicvideo.presets.sd15 import write_random
from tiny_components import SD15_KEYFRAMES, small_sd15_shapes


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """The sd15 layout at test size, its stage-2 ControlNet a SparseCtrl RGB model (the reference's
    latent in, the simplified condition embedding), its zero-initialised outputs made random."""
    root = write_random(tmp_path_factory.mktemp("sparse") / "w", small_sd15_shapes(), dtype=torch.float32,
                        progress=False)
    unet = UNet2DConditionModel.from_pretrained(root / "t2i" / "unet")
    torch.manual_seed(0)
    sparse = SparseControlNetModel.from_unet(unet, conditioning_channels=4)
    with torch.no_grad():
        for name, p in sparse.named_parameters():
            if name.startswith(("controlnet_down_blocks", "controlnet_mid_block", "controlnet_cond_embedding")):
                p.normal_(0, 0.1)
    shutil.rmtree(root / "i2v" / "controlnet")
    sparse.save_pretrained(root / "i2v" / "controlnet")
    return root


def test_the_reference_conditions_the_first_frame_as_diffusers_sparsectrl_pipeline(weights):
    stage = load_i2v("sd15", weights)
    assert type(stage.controlnet).__name__ == "SparseControlNetModel"
    control, latent = stage.encode_reference(torch.rand(1, 3, 32, 32), (32, 32))
    frames = 3
    ours = sparse_condition(stage.controlnet, control, latent, frames)
    cond, mask = AnimateDiffSparseControlNetPipeline.prepare_sparse_control_conditioning(
        None, latent[:, :, None], frames, [0], latent.device, latent.dtype)
    torch.testing.assert_close(ours.reshape(1, frames, 5, 4, 4).transpose(1, 2), torch.cat((cond, mask), 1))
    x, t = torch.randn(1, 4, frames, 4, 4), torch.tensor(500)
    text = torch.randn(frames, 7, 32)
    tokens = stage.appearance.unconditional(frames)
    with torch.no_grad():
        got = stage._predict(x, t, text, tokens, ours)
        down, mid = stage.controlnet(x, t, encoder_hidden_states=text, controlnet_cond=cond, conditioning_mask=mask,
                                     return_dict=False)
        want = stage.unet(x, t, encoder_hidden_states=(text, [tokens]), down_block_additional_residuals=down,
                          mid_block_additional_residual=mid).sample
        bare = stage.unet(x, t, encoder_hidden_states=(text, [tokens])).sample
    torch.testing.assert_close(got, want)
    assert not torch.allclose(got, bare, atol=1e-3)  # the condition reaches the UNet


def test_generate_runs_on_a_sparsectrl_folder(weights, tmp_path):
    run = tmp_path / "run"
    assert main(["generate", "a red ball", "--weights", str(weights), "--out", str(run), *SD15_KEYFRAMES]) == 0
    assert (run / "keyframes.mp4").is_file()


def test_assemble_takes_a_sparsectrl_folder_as_stage_2s_controlnet(weights, tmp_path, capsys):
    out = tmp_path / "sd15"
    assert main(["sd15", "assemble", str(out), "--base", str(weights / "t2i"),
                 "--motion-adapter", str(weights / "i2v" / "motion_adapter"),
                 "--controlnet", str(weights / "i2v" / "controlnet")]) == 0
    assert type(load_i2v("sd15", out).controlnet).__name__ == "SparseControlNetModel"
    # stage 3's ControlNet sees every frame: a SparseCtrl model there is refused before any work
    assert main(["sd15", "assemble", str(tmp_path / "bad"), "--base", str(weights / "t2i"),
                 "--motion-adapter", str(weights / "i2v" / "motion_adapter"),
                 "--v2v-controlnet", str(weights / "i2v" / "controlnet")]) == 2
    assert "a SparseCtrl ControlNet is for stage 2" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("kind", ["rgb", "scribble"])
def test_animatediffs_original_sparsectrl_file_converts_exactly(weights, tmp_path, kind):
    from magicvideo.formats import load_controlnet
    from tiny_components import animatediff_original

    source = SparseControlNetModel.from_pretrained(weights / "i2v" / "controlnet")
    if kind == "scribble":  # pixels in, through a small CNN, not the latent through one conv
        torch.manual_seed(1)
        source = SparseControlNetModel(**{**source.config, "conditioning_channels": 3,
                                          "use_simplified_condition_embedding": False,
                                          "conditioning_embedding_out_channels": (8, 16, 32)})
    # as AnimateDiff saves it: its own names in the motion modules, the weights under "controlnet"
    torch.save({"controlnet": animatediff_original(source)}, tmp_path / f"v3_sd15_sparsectrl_{kind}.ckpt")
    unet_config = UNet2DConditionModel.load_config(weights / "t2i" / "unet")
    model = load_controlnet(tmp_path / f"v3_sd15_sparsectrl_{kind}.ckpt", unet_config)
    assert type(model).__name__ == "SparseControlNetModel"
    assert model.config.use_simplified_condition_embedding == (kind == "rgb")
    want = source.state_dict()
    assert model.state_dict().keys() == want.keys()
    assert all(torch.equal(v, want[k]) for k, v in model.state_dict().items())
    if kind == "scribble":
        return
    out = tmp_path / "sd15"
    assert main(["sd15", "assemble", str(out), "--base", str(weights / "t2i"),
                 "--motion-adapter", str(weights / "i2v" / "motion_adapter"),
                 "--controlnet", str(tmp_path / f"v3_sd15_sparsectrl_{kind}.ckpt")]) == 0
    assert type(load_i2v("sd15", out).controlnet).__name__ == "SparseControlNetModel"
