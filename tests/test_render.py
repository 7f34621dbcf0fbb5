"""The renderer: exact across frame rates, consistent across sizes, deterministic, separable."""

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from magicvideo.judge.segment import COLOUR_TOLERANCE, PALETTE_LAB
from magicvideo.world import draw_clip, render_background, render_clip, render_masks, vocab
from magicvideo.world.render import frame_times


def test_8fps_frames_are_exactly_every_third_24fps_frame(heldout_clips):
    for clip in heldout_clips[:4]:
        full = render_clip(clip.scene, 64, fps=24, frames=46)
        keys = render_clip(clip.scene, 64, fps=8, frames=16)
        assert full.shape == (3, 46, 64, 64) and keys.shape == (3, 16, 64, 64)
        assert torch.equal(full[:, ::3], keys)


def test_sizes_agree(heldout_clips):
    for clip in heldout_clips[:4]:
        hi = render_clip(clip.scene, 128, fps=8, frames=4)
        lo = render_clip(clip.scene, 64, fps=8, frames=4)
        down = F.avg_pool2d(hi.transpose(0, 1), 2).transpose(0, 1)
        assert (down - lo).abs().mean() < 0.01


def test_render_is_deterministic_and_in_range(heldout_clips):
    scene = heldout_clips[0].scene
    a, b = render_clip(scene, 64, 24, 5), render_clip(scene, 64, 24, 5)
    assert torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1 and a.dtype == torch.float32


def test_objects_are_antialiased():
    clip = draw_clip(0, "train", 3)
    masks = render_masks(clip.scene, 64, [0.0])
    edge = (masks > 0.05) & (masks < 0.95)
    assert edge.sum() > 10  # a rim of partial coverage, not a staircase
    assert masks.max() == 1.0


def test_masks_follow_draw_order():
    for i in range(40):
        clip = draw_clip(0, "train", i)
        if len(clip.scene.objects) == 2:
            masks = render_masks(clip.scene, 64, frame_times(8, 3))
            assert masks.shape == (2, 3, 64, 64)
            assert (masks.sum(0) <= 1 + 1e-6).all()
            return
    pytest.fail("no two-object scene in the first 40")


@pytest.mark.parametrize("background", vocab.BACKGROUNDS)
def test_backgrounds_are_textured_and_far_from_every_object_colour(background):
    for seed in range(6):
        for size in (64, 128):
            img = render_background(background, seed, size, t=0.3 * seed)
            assert img.std(dim=(1, 2)).max() > 0.01, "a procedural texture, not a flat fill"
            lab = cv2.cvtColor(img.permute(1, 2, 0).numpy(), cv2.COLOR_RGB2Lab).reshape(-1, 1, 3)
            dist = np.linalg.norm(lab - PALETTE_LAB[None], axis=-1)
            assert dist.min() > COLOUR_TOLERANCE + 5


def test_bad_sizes_and_names_are_clear_errors(heldout_clips):
    with pytest.raises(ValueError, match="size"):
        render_clip(heldout_clips[0].scene, 4)
    with pytest.raises(ValueError, match="unknown background"):
        render_background("ocean", 0, 32)
