"""The judge reads the world's ground truth right, and notices when a video is wrong."""

import numpy as np
import pytest
import torch

from magicvideo.judge import Expected, PromptError, parse_prompt, read_clip, score_clip
from magicvideo.judge.files import expected_from_scene
from magicvideo.judge.judge import aggregate, object_neighbourhoods
from magicvideo.judge.segment import Detection
from magicvideo.world import render_clip


@pytest.mark.parametrize("size", [64, 128])
def test_ground_truth_clips_are_read_right(heldout_clips, size):
    clips = heldout_clips if size == 64 else heldout_clips[:4]
    for clip in clips:
        reading = read_clip(render_clip(clip.scene, size, fps=8, frames=16))
        score = score_clip(reading, expected_from_scene(clip.scene))
        assert score["all"], (clip.caption, reading.to_dict())
        assert reading.count_stability == 1.0
        assert reading.flicker < 0.01 and reading.track_jitter < 0.01


def test_a_single_image_is_read_without_motion(heldout_clips):
    clip = heldout_clips[0]
    image = render_clip(clip.scene, 64, 8, 1)[:, 0]
    reading = read_clip(image)
    assert reading.frames == 1 and all(o.motion is None for o in reading.objects)
    score = score_clip(reading, expected_from_scene(clip.scene))
    assert score["motion"] is None and score["shape"] == len(clip.scene.objects)


def test_the_judge_catches_wrong_videos(heldout_clips):
    clip = next(c for c in heldout_clips if c.scene.objects[0].motion not in ("stays still", "spins"))
    video = render_clip(clip.scene, 64, 8, 16)
    truth = expected_from_scene(clip.scene)
    backwards = score_clip(read_clip(video.flip(1)), truth)  # time reversed: the opposite motion
    assert backwards["motion"] < len(truth.objects) and not backwards["all"]
    frozen = score_clip(read_clip(video[:, :1].expand(-1, 16, -1, -1)), truth)
    assert frozen["motion"] < len(truth.objects)
    recoloured = score_clip(read_clip(video[[2, 1, 0]]), truth)  # RGB -> BGR
    assert recoloured["colour"] < len(truth.objects)
    empty = score_clip(read_clip(torch.full((3, 4, 64, 64), 0.4)), truth)
    assert empty["objects_found"] == 0 and empty["shape"] == 0 and not empty["all"]


def test_motion_confusion_says_where_motion_errors_go(heldout_clips):
    opposite = {"moves left": "moves right", "moves right": "moves left", "moves up": "moves down",
                "moves down": "moves up", "grows": "shrinks", "shrinks": "grows"}
    clips = [c for c in heldout_clips if len(c.scene.objects) == 1 and c.scene.objects[0].motion in opposite][:3]
    assert clips
    truth = [expected_from_scene(c.scene) for c in clips]
    videos = [render_clip(c.scene, 64, 8, 16) for c in clips]
    readings = [read_clip(v.flip(1)) for v in videos] + [read_clip(torch.full((3, 4, 64, 64), 0.4))]
    scores = [score_clip(r, t) for r, t in zip(readings, truth + truth[:1])]
    table = aggregate(scores, readings)["motion_confusion"]
    asked = [c.scene.objects[0].motion for c in clips]
    assert sum(sum(row.values()) for row in table.values()) == len(clips) + 1
    for motion in set(asked):  # played backwards, every motion reads as its opposite
        assert table[motion].get(opposite[motion], 0) == asked.count(motion)
    assert table[asked[0]]["not found"] == 1  # the empty video: no object to read a motion from
    assert aggregate(scores[:1], readings[:1])["accuracy"]["motion"] == 0


def test_mild_degradation_does_not_fool_the_judge(heldout_clips):
    g = torch.Generator().manual_seed(0)
    for clip in heldout_clips[:6]:
        video = render_clip(clip.scene, 64, 8, 16)
        noisy = (video + 0.03 * torch.randn(video.shape, generator=g)).clamp(0, 1)
        assert score_clip(read_clip(noisy), expected_from_scene(clip.scene))["all"]


def test_prompt_parser_reads_the_world_vocabulary():
    e = parse_prompt("A crimson star drifting to the left over a sunset.")
    assert e == Expected([("star", "red", "moves left")], "sunset")
    e = parse_prompt("in front of a clear blue sky, an ivory love heart hovers in place and a blue box rises")
    assert e == Expected([("heart", "white", "stays still"), ("square", "blue", "moves up")], "blue sky")
    assert parse_prompt("a lime orb") == Expected([("circle", "green", None)], None)


def test_with_motion_swaps_every_motion_phrase_in_its_form():
    from magicvideo.judge.prompt import with_motion

    assert with_motion("A crimson star drifting to the left over a sunset, and a blue box rises.") == (
        "a crimson star staying still over a sunset and a blue box stays still")
    assert with_motion("a red circle moves left", "moves right") == "a red circle moves right"
    assert with_motion("a red circle over a meadow") == "a red circle over a meadow"
    assert parse_prompt(with_motion("an ivory love heart hovers in place", "spins")).objects[0][2] == "spins"
    with pytest.raises(ValueError, match="unknown motion"):
        with_motion("a red circle", "jumps")


@pytest.mark.parametrize("prompt, message", [
    ("", "empty"),
    ("a red circle moving left over a beautiful sunset", "unknown word.*'beautiful'"),
    ("a circle moving left", "no colour"),
    ("a red moving left", "not followed by a shape"),
    ("over a meadow", "names no object"),
    ("a red circle over a meadow and a sunset", "more than one background"),
])
def test_prompt_parser_errors_are_clear(prompt, message):
    with pytest.raises(PromptError, match=message):
        parse_prompt(prompt)


def test_object_neighbourhoods_grow_each_frames_objects_by_two_pixels():
    mask = np.zeros((16, 16), bool)
    mask[8, 8] = True
    found = Detection(0.5, 0.5, 1 / 256, "red", np.zeros(5), np.zeros(5), mask)
    near = object_neighbourhoods([[found], []], (2, 16, 16))
    assert near[0, 6:11, 6:11].all() and near[0].sum() == 25  # the pixel and 2 px around it
    assert not near[1].any()  # frame by frame: the second frame found nothing


def test_shape_accuracy_is_broken_down_by_the_shape_asked(heldout_clips):
    from dataclasses import replace

    from magicvideo.judge.t2i import expected, shape_accuracy
    from magicvideo.world import render_frames

    clips = heldout_clips[:8]
    readings = [read_clip(render_frames(c.scene, 64, [0.0])[:, 0]) for c in clips]
    scores = [score_clip(r, expected(c)) for c, r in zip(clips, readings)]
    asked = {o.shape for c in clips for o in c.scene.objects}
    assert shape_accuracy(clips, scores, readings) == {s: 1.0 for s in sorted(asked)}
    # every object drawn as a circle: only the circles asked for stay right
    circles = [replace(c.scene, objects=tuple(replace(o, shape="circle") for o in c.scene.objects)) for c in clips]
    readings = [read_clip(render_frames(s, 64, [0.0])[:, 0]) for s in circles]
    scores = [score_clip(r, expected(c)) for c, r in zip(clips, readings)]
    got = shape_accuracy(clips, scores, readings)
    assert got.keys() == asked and all(v == (1.0 if s == "circle" else 0.0) for s, v in got.items())
