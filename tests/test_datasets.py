"""Datasets: the world's clips as stages train on them, and a user's folder of footage."""

import pytest
import torch
from torch.utils.data import DataLoader

from magicvideo.media import write_video
from magicvideo.world import WorldClips, WorldImages, draw_clip, render_clip
from magicvideo.world.footage import VideoFolderClips


def test_world_clips_give_every_stage_its_tensors():
    ds = WorldClips("train", seed=1, length=10, keyframes=4, low_size=32, high_size=64)
    item = ds[3]
    assert item["keyframes"].shape == (3, 4, 32, 32)
    assert item["keyframes_hr"].shape == (3, 4, 64, 64)
    assert item["frames"].shape == (3, 10, 64, 64)
    assert item["reference"].shape == (3, 64, 64)
    assert torch.equal(item["frames"][:, ::3], item["keyframes_hr"])
    assert torch.equal(item["reference"], item["keyframes_hr"][:, 0])
    assert item["caption"] == draw_clip(1, "train", 3).caption
    # the same clip with fewer parts renders the same pixels
    lean = WorldClips("train", seed=1, length=10, keyframes=4, low_size=32, high_size=64,
                      parts=("keyframes_hr",))[3]
    assert set(lean) == {"keyframes_hr", "caption", "index"}
    assert torch.equal(lean["keyframes_hr"], item["keyframes_hr"])


def test_world_datasets_batch_and_check_arguments():
    batch = next(iter(DataLoader(WorldImages("heldout", size=32, length=8), batch_size=4)))
    assert batch["image"].shape == (4, 3, 32, 32) and len(batch["caption"]) == 4
    with pytest.raises(ValueError, match="unknown clip parts"):
        WorldClips(parts=("audio",))
    with pytest.raises(IndexError):
        WorldImages(length=2)[2]


def test_video_folder_reads_footage_like_world_clips(tmp_path):
    clip = draw_clip(0, "train", 0)
    write_video(tmp_path / "a.mp4", render_clip(clip.scene, 96, 24, 46), 24)
    wide = torch.rand(3, 30, 48, 80)
    write_video(tmp_path / "b.mp4", wide, 24)
    (tmp_path / "captions.csv").write_text('file,caption\na.mp4,"a red, round thing"\nb.mp4,noise\n')
    ds = VideoFolderClips(tmp_path, keyframes=16, low_size=32, high_size=64)
    assert len(ds) == 2
    item = ds[0]
    assert item["caption"] == "a red, round thing"
    assert item["frames"].shape == (3, 46, 64, 64) and item["keyframes"].shape == (3, 16, 32, 32)
    assert torch.allclose(item["frames"][:, ::3], item["keyframes_hr"])
    # the keyframes match the world's own 8 fps render, resized
    world = WorldClips("train", seed=0, keyframes=16, low_size=32, high_size=64, parts=("keyframes_hr",))[0]
    assert (item["keyframes_hr"] - world["keyframes_hr"]).abs().mean() < 0.03
    short = ds[1]  # 30 frames at 24 fps is shorter than the clip: the last frame repeats
    assert short["frames"].shape == (3, 46, 64, 64)
    assert torch.equal(short["frames"][:, -1], short["frames"][:, -2])


def test_video_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="captions file"):
        VideoFolderClips(tmp_path)
    (tmp_path / "captions.csv").write_text("path,text\nx.mp4,hi\n")
    with pytest.raises(ValueError, match="lacks the column"):
        VideoFolderClips(tmp_path)
    (tmp_path / "captions.csv").write_text("file,caption\nx.mp4,hi\n")
    with pytest.raises(FileNotFoundError, match="x.mp4"):
        VideoFolderClips(tmp_path)
