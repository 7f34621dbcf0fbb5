"""The synthetic world: procedural captioned clips with exact ground truth at any size and frame rate."""

from magicvideo.world.captions import make_caption
from magicvideo.world.datasets import WorldClip, WorldClips, WorldImages, draw_clip
from magicvideo.world.render import render_background, render_clip, render_frames, render_masks
from magicvideo.world.scene import SPLITS, Scene, WorldObject, sample_scene
from magicvideo.world.write import write_world

__all__ = [
    "SPLITS", "Scene", "WorldClip", "WorldClips", "WorldImages", "WorldObject", "draw_clip",
    "make_caption", "render_background", "render_clip", "render_frames", "render_masks",
    "sample_scene", "write_world",
]
