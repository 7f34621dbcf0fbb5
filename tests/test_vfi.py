"""Frame interpolation: the pretrained IFNet, the EDSC model, the stage, its trainer and command."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from magicvideo.cli import main
from magicvideo.judge.metrics import psnr, ssim
from magicvideo.media import read_video, write_video
from magicvideo.models.edsc import EDSCInterpolator, deformable_separable_sample
from magicvideo.models.ifnet import IFNet
from magicvideo.presets import load_vfi
from magicvideo.presets.tiny import TINY_EDSC
from magicvideo.stages.vfi import FrameInterpolator, output_frames, scene_change
from magicvideo.training.common import load_checkpoint
from magicvideo.training.vfi import VFITrainConfig, train_vfi
from magicvideo.world import draw_clip, render_clip


@pytest.fixture(scope="module")
def ifnet():
    return IFNet.from_rife_package()


def _photo() -> torch.Tensor:
    folder = Path(list(importlib.util.find_spec("skimage").submodule_search_locations)[0]) / "data"
    pixels = np.asarray(Image.open(folder / "astronaut.png").convert("RGB")).copy()
    return torch.from_numpy(pixels).permute(2, 0, 1) / 255


def test_pretrained_ifnet_loads_every_weight(ifnet):
    assert sum(p.numel() for p in ifnet.parameters()) == 5_160_980  # RIFE 3.9's four IFBlocks
    assert not ifnet.training


def test_ifnet_interpolates_a_panned_photo_at_any_t(ifnet):
    photo = _photo()
    crop = lambda shift: photo[:, 100:196, 100 + shift : 196 + shift]  # noqa: E731 - pans 8 px a gap
    img0, img1 = crop(0)[None], crop(8)[None]
    for t, shift in ((0.25, 2), (0.5, 4), (0.75, 6)):
        with torch.no_grad():
            out = ifnet(img0, img1, t).frame
        truth = crop(shift)[None]
        blend = (1 - t) * img0 + t * img1
        assert psnr(out, truth) > psnr(blend, truth) + 6, t


def test_ifnet_pads_only_to_what_its_blocks_divide_and_takes_rifes_scale(ifnet, monkeypatch):
    """Sides are padded to 32 at scale 1 (4 x the coarsest block's 8), to 64 at 0.5: 96x96 goes
    through as it is, and a coarser scale still pans the photo better than blending."""
    import torch.nn.functional as F

    padded = []
    real_pad = F.pad
    monkeypatch.setattr(F, "pad", lambda x, pad, **kw: padded.append(pad) or real_pad(x, pad, **kw))
    photo = _photo()
    img0, img1 = photo[None, :, 100:196, 100:196], photo[None, :, 100:196, 108:204]
    truth, blend = photo[None, :, 100:196, 104:200], (img0 + img1) / 2
    with torch.no_grad():
        full = ifnet(img0, img1, 0.5).frame
        assert padded == []  # 96 is a multiple of 32
        coarse = ifnet(img0, img1, 0.5, scale=0.5).frame
    assert padded == [(0, 32, 0, 32)] * 2  # to 128, a multiple of 64
    assert full.shape == coarse.shape == img0.shape
    assert psnr(coarse, truth) > psnr(blend, truth) + 6 and psnr(full, truth) > psnr(blend, truth) + 6
    with pytest.raises(ValueError, match="scale must be one of 0.25, 0.5, 1, 2, 4"):
        ifnet(img0, img1, 0.5, scale=0.3)


def test_ifnet_beats_blending_on_world_clips(ifnet):
    video = render_clip(draw_clip(11, "heldout", 3).scene, 128, 24, 10)  # a circle moving up
    img0, img1 = video[:, [0, 3, 6]].transpose(0, 1), video[:, [3, 6, 9]].transpose(0, 1)
    truth = video[:, [1, 4, 7]].transpose(0, 1)
    with torch.no_grad():
        out = ifnet(img0, img1, torch.full((3,), 1 / 3)).frame
    assert psnr(out, truth) > psnr((2 * img0 + img1) / 3, truth) + 6


def test_edsc_sampling_and_zero_initialised_model():
    img = torch.rand(2, 3, 12, 16)
    delta = torch.zeros(2, 3, 12, 16)
    delta[:, 1] = 1
    zero_flow, no_offsets = torch.zeros(2, 2, 12, 16), torch.zeros(2, 18, 12, 16)
    assert torch.allclose(deformable_separable_sample(img, zero_flow, delta, delta, no_offsets), img, atol=1e-5)
    shift = zero_flow.clone()
    shift[:, 0] = 2  # sample two pixels to the right
    moved = deformable_separable_sample(img, shift, delta, delta, no_offsets)
    assert torch.allclose(moved[..., :-2], img[..., 2:], atol=1e-5)
    model = EDSCInterpolator(widths=(8, 16, 16))
    prior = (torch.rand(2, 3, 12, 16), torch.randn(2, 4, 12, 16), torch.rand(2, 1, 12, 16) * 0.9 + 0.05)
    with torch.no_grad():
        out = model(img, img.flip(-1), torch.tensor([0.3, 0.6]), *prior)
    expected = prior[2] * deformable_separable_sample(img, prior[1][:, :2], delta, delta, no_offsets) + \
        (1 - prior[2]) * deformable_separable_sample(img.flip(-1), prior[1][:, 2:], delta, delta, no_offsets)
    assert torch.allclose(out, expected, atol=1e-4)  # an untrained model is exactly IFNet's warp and blend


def test_stage_frame_count_and_originals():
    video = torch.rand(2, 3, 5, 16, 16)
    out = FrameInterpolator("blend")(video, times=3).frames
    assert out.shape == (2, 3, 13, 16, 16)
    assert torch.equal(out[:, :, ::3], video)
    assert torch.allclose(out[:, :, 1], (2 * video[:, :, 0] + video[:, :, 1]) / 3)
    assert FrameInterpolator("repeat")(video[0], times=2).frames.shape == (3, 9, 16, 16)
    assert torch.equal(FrameInterpolator("blend")(video, times=1).frames, video)
    with pytest.raises(ValueError, match="expected a video"):
        FrameInterpolator("blend")(torch.rand(3, 16, 16))
    with pytest.raises(ValueError, match="unknown interpolation method"):
        FrameInterpolator("magic")


def test_flow_baseline_beats_blending_on_a_pan():
    photo = _photo()
    video = torch.stack([photo[:, 50:114, 50 + 4 * i : 114 + 4 * i] for i in range(7)], 1)
    out = FrameInterpolator("flow")(video[:, ::3], times=3).frames
    new = [1, 2, 4, 5]
    blend = FrameInterpolator("blend")(video[:, ::3], times=3).frames
    assert psnr(out[:, new], video[:, new]) > psnr(blend[:, new], video[:, new]) + 3


@pytest.mark.skipif(not (TINY_EDSC / "config.json").is_file(), reason="EDSC weights not trained yet")
def test_shipped_edsc_beats_ifnet_and_blending_on_heldout_clips(tmp_path):
    video = render_clip(draw_clip(31, "heldout", 1).scene, 128, 24, 19)
    keys, new = video[:, ::3], [i for i in range(19) if i % 3]
    results = {m: load_vfi(m)(keys, times=3).frames for m in ("edsc", "ifnet", "blend")}
    score = {m: psnr(f[:, new], video[:, new]) for m, f in results.items()}
    assert score["edsc"] > score["blend"] + 3 and score["edsc"] > score["ifnet"]
    assert ssim(results["edsc"][:, new].transpose(0, 1), video[:, new].transpose(0, 1)) > 0.95
    stage = load_vfi("edsc")
    stage.save_pretrained(tmp_path / "w")
    again = FrameInterpolator.from_pretrained(tmp_path / "w", method="edsc")
    assert torch.equal(again(keys[:, :3], times=3).frames, stage(keys[:, :3], times=3).frames)


def test_training_resumes_where_it_stopped(tmp_path):
    small = dict(samples=8, size=32, crop=16, batch_size=2, adv_start=2, warmup=2, checkpoint_every=1,
                 eval_clips=0, widths=(8, 16, 16))
    train_vfi(VFITrainConfig(steps=4, **small), tmp_path / "straight", progress=False)
    train_vfi(VFITrainConfig(steps=2, **small), tmp_path / "resumed", progress=False)  # "killed" at step 2
    assert load_checkpoint(tmp_path / "resumed")["step"] == 2
    train_vfi(VFITrainConfig(steps=4, **small), tmp_path / "resumed", progress=False)
    a, b = load_checkpoint(tmp_path / "straight"), load_checkpoint(tmp_path / "resumed")
    assert b["step"] == 4
    for key in a["gen"]:
        assert torch.equal(a["gen"][key], b["gen"][key]), key
    assert (tmp_path / "resumed" / "final" / "README.md").is_file()


def test_interpolate_command(tmp_path, capsys):
    video = render_clip(draw_clip(0, "train", 2).scene, 64, 8, 4)
    write_video(tmp_path / "in.mp4", video, 8)
    assert main(["interpolate", str(tmp_path / "in.mp4"), "-o", str(tmp_path / "out.mp4"), "--model", "ifnet",
                 "--quiet"]) == 0
    out, fps = read_video(tmp_path / "out.mp4")
    assert out.shape == (3, 10, 64, 64) and fps == 24
    (tmp_path / "bad.mp4").write_text("no")
    capsys.readouterr()
    assert main(["interpolate", str(tmp_path / "bad.mp4"), "-o", str(tmp_path / "x.mp4")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_streaming_holds_a_few_frames_whatever_the_length():
    """Frames are pulled only as the output needs them: never more than a batch of gaps ahead."""
    pulled, made = [0], []
    source = torch.rand(3, 40, 8, 8)

    def frames():
        for frame in source.unbind(1):
            pulled[0] += 1
            yield frame

    stage = FrameInterpolator("blend")
    for frame in stage.stream(frames(), times=3, batch_size=4):
        made.append(frame)
        originals_out = (len(made) - 1) // 3 + 1
        assert pulled[0] - originals_out <= 4  # 4 jobs = 2 gaps of 2 new frames, plus the frame ahead
    assert len(made) == 39 * 3 + 1
    torch.testing.assert_close(torch.stack(made, 1), stage(source, times=3).frames)


def _clip_with_sound(path, frames: int = 8, fps: int = 8) -> None:
    """A test-pattern clip with a sine tone, made by the ffmpeg that imageio-ffmpeg ships."""
    import subprocess

    import imageio_ffmpeg

    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i",
                    f"testsrc=size=64x48:rate={fps}", "-f", "lavfi", "-i", "sine=frequency=440", "-frames:v",
                    str(frames), "-t", str(frames / fps), "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac",
                    str(path)], check=True)


def test_interpolate_keeps_the_sound_and_writes_what_the_suffix_says(tmp_path, capsys):
    from magicvideo.media import open_video

    _clip_with_sound(tmp_path / "in.mp4")
    assert open_video(tmp_path / "in.mp4")[0].audio
    for name in ("out.webm", "out.mp4"):
        assert main(["interpolate", str(tmp_path / "in.mp4"), "-o", str(tmp_path / name), "--model", "blend",
                     "--quiet"]) == 0
        info, frames = open_video(tmp_path / name)
        assert info.audio and info.fps == 24 and (info.width, info.height) == (64, 48)
        assert len(list(frames)) == 7 * 3 + 1
    assert main(["interpolate", str(tmp_path / "in.mp4"), "-o", str(tmp_path / "quiet.mp4"), "--model", "blend",
                 "--no-audio", "--quiet"]) == 0
    assert not open_video(tmp_path / "quiet.mp4")[0].audio
    assert main(["interpolate", str(tmp_path / "in.mp4"), "-o", str(tmp_path / "pngs"), "--model", "blend",
                 "--times", "2", "--quiet"]) == 0
    assert len(list((tmp_path / "pngs").glob("frame_*.png"))) == 7 * 2 + 1
    for bad in ("x.png", "x.avi"):  # a video container it cannot write: refused before any work
        capsys.readouterr()
        assert main(["interpolate", str(tmp_path / "in.mp4"), "-o", str(tmp_path / bad), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert "cannot write" in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / bad).exists()


@pytest.mark.parametrize("rate", [2.5, 3, 0.4, 1])
def test_any_rate_shows_each_instant_of_the_input_and_keeps_its_duration(rate):
    """Output frame k shows the instant k / rate: the input frame itself where that is one, else
    (with blend, exactly) the mix of its two neighbours at that instant."""
    source = torch.rand(3, 6, 8, 8)  # unrelated noise frames: cuts by any measure, so detection is off
    made = list(FrameInterpolator("blend").stream(source.unbind(1), rate=rate, batch_size=3, scene_cut=0))
    assert len(made) == output_frames(6, rate) == int(5 * rate) + 1
    for k, frame in enumerate(made):
        position = k / rate
        i = min(int(position), 4)
        t = position - i
        torch.testing.assert_close(frame, (1 - t) * source[:, i] + t * source[:, i + 1])


def test_a_scene_cut_repeats_the_nearer_frame_instead_of_blending_two_scenes():
    red, blue = torch.full((3, 16, 16), 0.1), torch.full((3, 16, 16), 0.8)
    red[0, 4:10, 2:8], blue[2, 6:12, 6:12] = 0.9, 0.2  # a red square on dark, a blue one on light
    moved = red.roll(5, dims=2)  # motion within a scene: the same colours elsewhere
    assert scene_change(red, moved) < 0.05 < 0.5 < scene_change(red, blue)
    stage = FrameInterpolator("blend")
    frames = list(stage.stream([red, moved, blue], times=4, scene_cut=0.5))
    assert len(frames) == 9
    assert not torch.equal(frames[1], red)  # within the scene: blended
    assert [torch.equal(f, g) for f, g in zip(frames[4:], [moved, moved, blue, blue, blue])] == [True] * 5
    across = list(stage.stream([red, moved, blue], times=4, scene_cut=0.0))
    torch.testing.assert_close(across[6], (moved + blue) / 2)


def test_interpolate_to_any_frame_rate(tmp_path, capsys):
    from magicvideo.media import open_video

    _clip_with_sound(tmp_path / "in.mp4", frames=9, fps=8)
    assert main(["interpolate", str(tmp_path / "in.mp4"), "-o", str(tmp_path / "out.webm"), "--fps", "20",
                 "--model", "blend", "--quiet"]) == 0
    info, frames = open_video(tmp_path / "out.webm")
    assert info.fps == 20 and info.audio and len(list(frames)) == 8 * 20 // 8 + 1  # 1 s at 8 fps: 1 s at 20
    for argv, message in ((["--fps", "20", "--times", "2"], "--times or --fps"), (["--fps", "0"], "--fps must be"),
                          (["--scene-cut", "2"], "--scene-cut must be in [0, 1]")):
        capsys.readouterr()
        assert main(["interpolate", str(tmp_path / "in.mp4"), "-o", str(tmp_path / "x.mp4"), *argv]) == 2
        assert message in capsys.readouterr().err


def test_interpolation_in_bf16_follows_fp32_and_fp16_asks_for_a_gpu(tmp_path, capsys):
    from magicvideo.device import Placement

    video = render_clip(draw_clip(0, "train", 3).scene, 64, 8, 4)
    for method in ("ifnet", "edsc"):
        full = load_vfi(method)(video, times=3).frames
        half = load_vfi(method, placement=Placement(dtype="bf16"))
        assert next(half.ifnet.parameters()).dtype == torch.bfloat16
        out = half(video, times=3).frames
        assert out.dtype == torch.float32 and psnr(out, full) > 30, method
    write_video(tmp_path / "in.mp4", video, 8)
    assert main(["interpolate", str(tmp_path / "in.mp4"), "-o", str(tmp_path / "out.mp4"), "--dtype", "fp16",
                 "--device", "cpu", "--quiet"]) == 2
    assert "--dtype fp16 needs a GPU" in capsys.readouterr().err and not (tmp_path / "out.mp4").exists()
