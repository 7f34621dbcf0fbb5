"""Context windows for clips longer than the motion modules' length (diffusion/windows.py)."""

from __future__ import annotations

import pytest
import torch

from magicvideo.diffusion.windows import context_windows, free_noise, window_weights, windowed
from tiny_components import tiny_i2v


def test_windows_cover_every_frame_and_end_at_the_last():
    assert context_windows(10, 16, 4) == [list(range(10))]  # it fits: one window, the plain loop
    windows = context_windows(10, 4, 3)
    assert [w[0] for w in windows] == [0, 3, 6] and all(len(w) == 4 for w in windows)
    assert windows[-1][-1] == 9
    assert sorted({i for w in context_windows(23, 8, 5) for i in w}) == list(range(23))
    assert window_weights(4).tolist() == [1, 2, 2, 1] and window_weights(1).tolist() == [1]
    with pytest.raises(ValueError, match="at least 1"):
        context_windows(10, 4, 0)


def test_blending_a_per_frame_prediction_changes_nothing():
    # a prediction that treats each frame alone gives the same frames from any window, so the
    # weighted blend must return it exactly; one that reads its window's length shows the windows
    x = torch.randn(2, 4, 11, 3, 3)
    rows = {"text": torch.randn(2 * 11, 5, 8), "tokens": None}
    def per_frame(x, text, tokens):
        return x * 2 + text.reshape(x.shape[0], x.shape[2], -1).mean(-1)[:, None, :, None, None]

    blended = windowed(per_frame, x, rows, 4, 3)
    whole = x * 2 + rows["text"].reshape(2, 11, -1).mean(-1)[:, None, :, None, None]
    torch.testing.assert_close(blended, whole)
    lengths = windowed(lambda x, text, tokens: torch.full_like(x, float(x.shape[2])), x, rows, 4, 3)
    assert torch.all(lengths == 4)


def test_free_noise_reuses_earlier_noise_shuffled_and_seeded():
    noise = torch.randn(1, 4, 12, 2, 2)
    out = free_noise(noise, 5, 2, seed=1)
    assert torch.equal(out[:, :, :5], noise[:, :, :5])
    first = {tuple(noise[0, :, i].flatten().tolist()) for i in range(5)}
    assert all(tuple(out[0, :, i].flatten().tolist()) in first for i in range(5, 12))  # noise the windows share
    assert torch.equal(free_noise(noise, 5, 2, seed=1), out) and not torch.equal(free_noise(noise, 5, 2, seed=2), out)
    assert torch.equal(free_noise(noise, 12, 2), noise)


def test_a_window_over_the_whole_clip_is_the_plain_stage_and_longer_clips_slide(text):
    stage = tiny_i2v(text)
    ref = torch.rand(3, 32, 32)
    plain = stage("a red circle moving left", ref, seed=0, frames=4).frames
    torch.testing.assert_close(stage("a red circle moving left", ref, seed=0, frames=4, context_length=4).frames,
                               plain)
    long = stage("a red circle moving left", ref, seed=0, frames=7, context_length=4, context_stride=2).frames
    assert long.shape == (1, 3, 7, 32, 32) and 0 <= long.min() and long.max() <= 1
    with pytest.raises(ValueError, match="stride 5 is longer than the context length 4"):
        stage("a red circle", ref, frames=7, context_length=4, context_stride=5)


def test_longer_clips_than_the_motion_modules_from_the_command_line(tmp_path, capsys):
    from magicvideo.cli import main
    from magicvideo.media import read_video, write_image

    write_image(tmp_path / "ref.png", torch.rand(3, 64, 64))
    out = tmp_path / "long.mp4"
    assert main(["i2v", "a red circle moving left over a meadow", "--image", str(tmp_path / "ref.png"), "-o",
                 str(out), "--steps", "1", "--frames", "6", "--context-length", "4", "--context-stride", "2",
                 "--quiet"]) == 0
    assert read_video(out)[0].shape[1] == 6
    capsys.readouterr()
    assert main(["i2v", "a red circle", "--image", str(tmp_path / "ref.png"), "-o", str(tmp_path / "x.mp4"),
                 "--frames", "6", "--context-stride", "0", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--context-stride" in err and err.count("\n") == 1
    from magicvideo.cli import build_parser

    args = build_parser().parse_args(["generate", "a red circle", "--frames", "64", "--context-length", "16"])
    assert (args.frames, args.context_length) == (64, 16)
