"""Natural footage for the interpolator: photographs under camera motion, and training on them."""

import numpy as np
import pytest
import torch

from magicvideo.cli import main
from magicvideo.judge.metrics import psnr
from magicvideo.models.edsc import EDSCInterpolator
from magicvideo.models.ifnet import IFNet
from magicvideo.training.camera import HELD_OUT, load_photo, photo_files, random_gap
from magicvideo.training.vfi import VFITrainConfig, train_vfi


def test_scikit_image_photos_leave_the_benchmarks_out():
    names = {p.name for p in photo_files("scikit-image")}
    assert len(names) >= 10 and not names & set(HELD_OUT)
    assert all(p.is_file() for p in photo_files("scikit-image"))


def test_a_photo_folder_is_checked_before_any_work(tmp_path):
    with pytest.raises(FileNotFoundError, match="no folder"):
        photo_files(str(tmp_path / "missing"))
    (tmp_path / "notes.txt").write_text("not a photo")
    with pytest.raises(FileNotFoundError, match="holds no"):
        photo_files(str(tmp_path))
    from PIL import Image
    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "b.png")
    Image.new("RGB", (30, 40), (10, 10, 200)).save(tmp_path / "a.JPG")
    assert [p.name for p in photo_files(str(tmp_path))] == ["a.JPG", "b.png"]
    photo = load_photo(tmp_path / "b.png", 16)
    assert photo.shape == (3, 16, 16) and abs(float(photo[0].mean()) - 200 / 255) < 0.01


def test_a_gap_is_one_continuous_motion_rendered_at_each_instant():
    photos = [load_photo(p, 4 * 64) for p in photo_files("scikit-image")[:4]]
    seeds = range(6)
    gaps = [random_gap(photos, np.random.default_rng(s), 64, [0, 1, 0.5]) for s in seeds]
    assert gaps[0].shape == (3, 3, 64, 64) and 0 <= float(gaps[0].min()) and float(gaps[0].max()) <= 1
    # each instant is rendered from the motion alone, whichever other instants are asked for
    alone = random_gap(photos, np.random.default_rng(0), 64, [0.5])
    assert torch.allclose(alone[0], gaps[0][2], atol=1e-6)
    # the camera moved, and a flow-based interpolator recovers the middle far better than blending
    ifnet = IFNet.from_rife_package()
    f0, f1, mid = (torch.stack([g[i] for g in gaps]) for i in range(3))
    assert all(psnr(g[0], g[1]) < 35 for g in gaps)
    flow = ifnet(f0, f1, torch.full((len(gaps),), 0.5)).frame
    assert psnr(flow.detach(), mid) > psnr((f0 + f1) / 2, mid) + 3


SMALL = dict(samples=8, size=32, crop=16, batch_size=2, steps=2, adv_start=1, warmup=1, checkpoint_every=1,
             eval_clips=0, widths=(8, 16, 16))


def test_fine_tuning_on_photographs_starts_from_the_given_weights(tmp_path):
    start = EDSCInterpolator(widths=(8, 16, 16))
    torch.manual_seed(5)
    with torch.no_grad():
        for p in start.parameters():
            p.normal_(0, 0.01)  # nothing like a fresh model, whose head is zero
    start.save_pretrained(tmp_path / "start")
    config = VFITrainConfig(natural=1.0, init=str(tmp_path / "start"), lr=0.0, **SMALL)
    final = EDSCInterpolator.from_pretrained(train_vfi(config, tmp_path / "run", progress=False))
    for (name, a), b in zip(start.state_dict().items(), final.state_dict().values(), strict=True):
        assert torch.equal(a, b), name  # lr 0: the weights stay the ones given
    cache = torch.load(tmp_path / "run" / "triplets.pt")
    assert cache["data"].shape[0] == 8 and torch.isfinite(cache["data"].float()).all()


def test_wrong_natural_settings_fail_in_one_line_before_any_work(tmp_path, capsys):
    EDSCInterpolator(widths=(8, 16, 24)).save_pretrained(tmp_path / "other")
    bad = {"natural: 1.5": "in [0, 1]", "natural: 0.5\nphotos: nowhere": "no folder nowhere",
           "init: nowhere": "no EDSC weights folder", f"init: {tmp_path / 'other'}": "has widths [8, 16, 24]"}
    for i, (lines, message) in enumerate(bad.items()):
        config = tmp_path / f"bad{i}.yaml"
        config.write_text("widths: [8, 16, 16]\n" + lines + "\n")
        code = main(["train", "vfi", "--config", str(config), "--out", str(tmp_path / f"run{i}")])
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / f"run{i}").exists()


def test_the_shipped_footage_head_beats_ifnet_and_the_world_head_on_held_out_natural_motion():
    from magicvideo.presets import load_vfi
    from magicvideo.presets.tiny import TINY_EDSC_NATURAL
    from magicvideo.training.camera import held_out_motions

    video = held_out_motions(frames=13)["pan and zoom"]  # photographs no training run saw
    keys, new = video[:, ::3], [i for i in range(13) if i % 3]
    score = {name: psnr(load_vfi(method, weights)(keys, times=3).frames[:, new], video[:, new])
             for name, method, weights in (("natural", "edsc", TINY_EDSC_NATURAL), ("world", "edsc", None),
                                           ("ifnet", "ifnet", None))}
    assert score["natural"] > score["ifnet"] + 1 and score["natural"] > score["world"] + 1, score


def test_interpolate_model_edsc_takes_the_footage_head_unless_given_weights(tmp_path, monkeypatch):
    import magicvideo.presets as presets
    from magicvideo.media import write_video
    from magicvideo.presets.tiny import TINY_EDSC_NATURAL

    write_video(tmp_path / "in.mp4", torch.rand(3, 4, 32, 32), 8)
    asked = []
    real = presets.load_vfi
    monkeypatch.setattr(presets, "load_vfi",
                        lambda method, weights, *a: asked.append(weights) or real(method, weights, *a))
    for extra in ([], ["--weights", str(TINY_EDSC_NATURAL.parent / "vfi_edsc")]):
        assert main(["interpolate", str(tmp_path / "in.mp4"), "-o", str(tmp_path / "o.mp4"), "--model", "edsc",
                     "--quiet", *extra]) == 0
    assert asked == [TINY_EDSC_NATURAL, str(TINY_EDSC_NATURAL.parent / "vfi_edsc")]
