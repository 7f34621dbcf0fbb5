"""Prompt travel (travel.py): a prompt per keyframe, interpolated in the text states."""

from __future__ import annotations

import json

import pytest
import torch

from magicvideo.errors import PromptError
from magicvideo.travel import PromptSchedule
from tiny_components import tiny_i2v


def test_a_schedule_parses_from_text_or_json_and_is_checked(tmp_path):
    s = PromptSchedule.parse(" 4: a red star spinning | 0: a red star moving left ")
    assert s.keys == ((0, "a red star moving left"), (4, "a red star spinning"))
    (tmp_path / "s.json").write_text(json.dumps({"0": "a", "3": "b"}))
    assert PromptSchedule.parse(str(tmp_path / "s.json")).keys == ((0, "a"), (3, "b"))
    for bad, message in [("2: a | 5: b", "starts at frame 0"), ("0: a | 0: b", "twice"), ("0: a | later", "FRAME"),
                         ("0: a | 3:  ", "frame 3 is empty")]:
        with pytest.raises(PromptError, match=message):
            PromptSchedule.parse(bad)
    with pytest.raises(PromptError, match="names frame 4, but the clip has 4"):
        s.check(4)


def test_frames_mix_the_scheduled_prompts_linearly_and_hold_the_last():
    w = PromptSchedule.parse("0: a | 4: b").weights(7)
    torch.testing.assert_close(w[:, 1], torch.tensor([0, 0.25, 0.5, 0.75, 1, 1, 1]))
    torch.testing.assert_close(w.sum(1), torch.ones(7))


def test_stage_2_reads_each_frames_prompt(text):
    stage = tiny_i2v(text)
    ref = torch.rand(3, 32, 32)
    one = stage("a red circle moving left", ref, seed=0, frames=3).frames
    same = stage(PromptSchedule.parse("0: a red circle moving left"), ref, seed=0, frames=3).frames
    torch.testing.assert_close(same, one)  # a schedule of one prompt is that prompt
    travel = stage(PromptSchedule.parse("0: a red circle moving left | 2: a blue star spinning"), ref, seed=0,
                   frames=3).frames
    assert not torch.allclose(travel, one)


def test_a_bad_schedule_is_one_line_before_any_work(tmp_path, capsys):
    from magicvideo.cli import main

    out = tmp_path / "run"
    assert main(["generate", "--prompt-schedule", "0: a red circle | 40: a blue star", "--frames", "16", "--out",
                 str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "names frame 40, but the clip has 16" in err and err.count("\n") == 1 and not out.exists()
    assert main(["i2v", "a red circle", "--prompt-schedule", "0: a", "--image", "x.png", "-o",
                 str(tmp_path / "k.mp4")]) == 2
    assert "not both" in capsys.readouterr().err
