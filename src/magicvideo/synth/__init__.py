"""The synthetic world: procedural captioned clips with exact ground truth at any size and frame rate."""

from magicvideo.synth.captions import make_caption
from magicvideo.synth.datasets import WorldClip, WorldClips, WorldImages, draw_clip
from magicvideo.synth.render import render_background, render_clip, render_frames, render_masks
from magicvideo.synth.scene import SPLITS, Scene, WorldObject, sample_scene
from magicvideo.synth.write import write_world

__all__ = [
    "SPLITS", "Scene", "WorldClip", "WorldClips", "WorldImages", "WorldObject", "draw_clip",
    "make_caption", "render_background", "render_clip", "render_frames", "render_masks",
    "sample_scene", "write_world",
]
