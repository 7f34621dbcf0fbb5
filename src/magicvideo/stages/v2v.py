"""Stage 3, video-to-video super-resolution: low-res keyframes become high-res frames.

As MagicVideo-V2's V2V (arXiv 2401.04468, sec. 2): the I2V stage's spatial UNet (with its
appearance branch) is shared, not copied, and this stage carries its own motion module; the
appearance encoder and a ControlNet read the reference image. How the low-res video enters:
1. its bicubic upsample is encoded and sampling starts from it at partial noise (`strength`,
   SDEdit), so the stage only has to add what the upsample lacks;
2. the ControlNet reads the upsampled frame beside the reference (6 channels), every step;
3. the decoded frames are back-projected onto the input (Irani & Peleg 1991): the error of their
   area downsample against the input keyframes is upsampled (bicubic or bilinear, a setting) and
   added back, so the output keeps the input's content exactly at the input's resolution and the
   stage adds only detail.
   Through the tiny VAE this is what lets the stage beat bicubic (benchmarks/results/v2v_quality.md).
4. where the input does not move between two keyframes, the previous decoded frame's detail is
   kept (`hold_still_detail`), before the back-projection: the decoder redraws texture on every
   frame, which on a still background is flicker (benchmarks/results/v2v_hold.md).

Saved as what the stage owns: `motion_adapter/`, `controlnet/`, `stage.json`; the rest comes
from the image-to-video stage it is attached to (`VideoToVideo.from_pretrained(path, i2v)`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import ControlNetModel, MotionAdapter, UNet2DConditionModel, UNetMotionModel

from magicvideo.diffusion.schedule import initial_noise, seed_list
from magicvideo.diffusion.video import LatentVideoStage, motion_unet, resize_reference
from magicvideo.diffusion.windows import free_noise
from magicvideo.latent import vae_factor
from magicvideo.models.appearance import attach_appearance
from magicvideo.settings import KERNELS, V2VSettings, frame_size
from magicvideo.stages.i2v import ImageToVideo, save_motion_adapter
from magicvideo.stages.parts import STAGE_FILE, check_weights_folder, variant
from magicvideo.text import PromptEmbedding
from magicvideo.travel import PromptSchedule


@dataclass
class V2VOutput:
    frames: torch.Tensor  # (B, 3, F, H, W) float32 in [0, 1]


def upsample(video: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """(B, 3, F, h, w) -> (B, 3, F, H, W) for size (H, W) or a side, bicubic, clamped to [0, 1]."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    b, _, f, h, w = video.shape
    flat = video.transpose(1, 2).reshape(b * f, 3, h, w).float()
    up = F.interpolate(flat, size=size, mode="bicubic", align_corners=False).clamp(0, 1)
    return up.reshape(b, f, 3, *size).transpose(1, 2)


def check_kernel(kernel: str) -> None:
    """Refuse a back-projection kernel that is not one of KERNELS, before any work."""
    if kernel not in KERNELS:
        raise ValueError(f"unknown back-projection kernel {kernel!r}; expected one of {KERNELS}")


def back_project(frames: torch.Tensor, low: torch.Tensor, iterations: int = 1, kernel: str = "bicubic") -> torch.Tensor:
    """Iterative back-projection (Irani & Peleg 1991): frames (B, 3, F, H, W) corrected so that
    their area downsample matches `low` (B, 3, F, h, w): x <- x + up(low - down(x)), clamped.
    The world renders its low-res keyframes as area averages of the high-res ones (52.6 dB apart),
    so `down` is the area filter; `up` is `kernel`. Bicubic puts back more of the input's detail
    (PSNR); bilinear, having no negative lobes, spreads the input's changes less far around a
    moving edge, so less of them lands on the still background (flicker;
    benchmarks/results/v2v_hold.md)."""
    check_kernel(kernel)
    b, _, f, *big = frames.shape
    x = frames.transpose(1, 2).reshape(b * f, 3, *big).float()
    lo = low.transpose(1, 2).reshape(b * f, 3, *low.shape[-2:]).float()
    for _ in range(iterations):
        error = lo - F.interpolate(x, size=lo.shape[-2:], mode="area")
        x = (x + F.interpolate(error, size=big, mode=kernel, align_corners=False)).clamp(0, 1)
    return x.reshape(b, f, 3, *big).transpose(1, 2)


def hold_still_detail(frames: torch.Tensor, low: torch.Tensor, threshold: float) -> torch.Tensor:
    """Where the input keyframes do not change from one frame to the next, carry the previous
    decoded frame over instead of the newly decoded one. The VAE decoder redraws fine texture on
    every frame, and on a still background that redrawing is flicker, which back-projection (low
    frequencies only) cannot remove. frames (B, 3, F, H, W) decoded, low (B, 3, F, h, w) input; a
    low-res pixel is still when no channel moved by more than `threshold` and none of its 3x3
    neighbours moved either; the mask is upsampled bilinearly, so held and redrawn regions blend.
    The back-projection that follows brings the input's own changes in. (Holding the previous
    *back-projected* frame instead was worse: its bicubic overshoot builds up frame after frame.)
    threshold <= 0: the frames unchanged."""
    if threshold <= 0 or frames.shape[2] < 2:
        return frames
    big = frames.shape[-2:]
    out = frames.clone()
    for t in range(1, frames.shape[2]):
        change = (low[:, :, t] - low[:, :, t - 1]).abs().amax(1, keepdim=True)
        moving = F.max_pool2d((change > threshold).float(), 3, stride=1, padding=1)
        still = 1 - F.interpolate(moving, size=big, mode="bilinear", align_corners=False)
        out[:, :, t] = still * out[:, :, t - 1] + (1 - still) * frames[:, :, t]
    return out


def share_spatial(target: UNetMotionModel, source: UNetMotionModel) -> None:
    """Make `target`'s spatial parameters (everything but its motion modules) the very tensors of
    `source`: one copy of the backbone in memory for two stages."""
    shared = {k: v for k, v in source.named_parameters() if "motion_modules" not in k}
    for name in [k for k, _ in target.named_parameters() if "motion_modules" not in k]:
        owner, _, attr = name.rpartition(".")
        setattr(target.get_submodule(owner), attr, shared[name])


class VideoToVideo(LatentVideoStage):
    """Our stage 3. `stage(prompt, keyframes, reference, seed=0).frames`: (B, 3, F, 64, 64) ->
    (B, 3, F, 128, 128)."""

    def __init__(self, unet: UNetMotionModel, i2v: ImageToVideo, controlnet: ControlNetModel | None = None,
                 settings: V2VSettings | None = None) -> None:
        super().__init__(unet, i2v.vae, i2v.text_encoder, i2v.appearance, controlnet, settings or V2VSettings(),
                         i2v.spatial_config, i2v.scheduler_config)
        self.i2v = i2v
        self.placement = i2v.placement

    @classmethod
    def attach(cls, i2v: ImageToVideo, adapter: MotionAdapter, controlnet: ControlNetModel | None = None,
               settings: V2VSettings | None = None) -> VideoToVideo:
        """A stage on `i2v`'s backbone (shared, not copied) with its own motion module."""
        from accelerate import init_empty_weights

        # Allocate no spatial layers of its own: they are about to become i2v's.
        with init_empty_weights():  # (from_unet2d moves the adapter it is given to the UNet's device: a stand-in)
            spatial = UNet2DConditionModel.from_config(i2v.spatial_config)
            shape = MotionAdapter.from_config(adapter.config)
            unet = motion_unet(spatial, shape, load_weights=False)
        unet.load_state_dict(adapter.state_dict(), strict=False, assign=True)  # the motion modules, as saved
        share_spatial(unet, i2v.unet)
        if i2v.appearance is not None:
            attach_appearance(unet, i2v.appearance.num_tokens)
            share_spatial(unet, i2v.unet)  # the image branch too
        empty = [k for k, v in unet.named_parameters() if v.is_meta]
        if empty:
            raise ValueError(f"the motion adapter does not cover the UNet's motion modules (e.g. {empty[0]})")
        place = {"device": i2v.unet.device} | ({"dtype": i2v.unet.dtype} if i2v.unet.dtype != torch.float32 else {})
        unet.to(**place)  # the buffers (positional tables) too
        controlnet = controlnet.to(**place) if controlnet is not None else None
        return cls(unet, i2v, controlnet, settings)

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """What this stage owns: its motion module, its ControlNet and its settings."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_motion_adapter(self.unet, path / "motion_adapter")
        if self.controlnet is not None:
            self.controlnet.save_pretrained(path / "controlnet")
        (path / STAGE_FILE).write_text(json.dumps(vars(self.settings), indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, i2v: ImageToVideo, defaults: dict | None = None) -> VideoToVideo:
        """From a folder written by `save_pretrained`, attached to the image-to-video stage `i2v`.
        `defaults`: the settings its stage.json leaves out (a preset's own; else V2VSettings')."""
        path = Path(path)
        if not (path / STAGE_FILE).is_file():
            raise FileNotFoundError(f"{path} is not a saved video-to-video stage (no {STAGE_FILE})")
        check_weights_folder(path / "motion_adapter", "motion_adapter")
        if (path / "controlnet").is_dir():
            check_weights_folder(path / "controlnet", "controlnet")
        dtype = {"torch_dtype": i2v.unet.dtype, "use_safetensors": True}  # never a pickle
        adapter = MotionAdapter.from_pretrained(path / "motion_adapter", **dtype, **variant(path / "motion_adapter"))
        controlnet = (ControlNetModel.from_pretrained(path / "controlnet", **dtype, **variant(path / "controlnet"))
                        if (path / "controlnet" / "config.json").is_file() else None)
        settings = V2VSettings.from_dict({**(defaults or {}), **json.loads((path / STAGE_FILE).read_text())})
        return cls.attach(i2v, adapter, controlnet, settings)

    def control(self, up: torch.Tensor, image: torch.Tensor, use_reference: bool = True) -> torch.Tensor:
        """The ControlNet's per-frame input (B*F, 6, H, W): the upsampled frame and the reference
        (zeros when `use_reference` is False, as trained with reference dropout)."""
        b, _, f, *size = up.shape
        ref = resize_reference(image, tuple(size)) if use_reference else torch.zeros(b, 3, *size)
        frames = up.transpose(1, 2).reshape(b * f, 3, *size)
        return torch.cat([frames, ref.to(frames).repeat_interleave(f, 0)], dim=1)

    @torch.no_grad()
    def __call__(self, prompt: str | list[str] | PromptEmbedding | PromptSchedule, video: torch.Tensor,
                 image: torch.Tensor,
                 seed: int | list[int] = 0, steps: int | None = None, strength: float | None = None,
                 guidance: float | None = None, appearance_scale: float | None = None, use_controlnet: bool = True,
                 use_reference: bool = True, back_projection: int | None = None, size: int | None = None,
                 width: int | None = None, height: int | None = None, hold_threshold: float | None = None,
                 back_projection_kernel: str | None = None, progress: bool = False, context_length: int | None = None,
                 context_stride: int | None = None,
                 cache_interval: int | None = None) -> V2VOutput:
        """video: (B, 3, F, h, w) or (3, F, h, w) low-res frames in [0, 1]; image: the reference,
        (3, H, W) or (B, 3, H, W). Every setting left None is the stage's (V2VSettings says what
        each does and its range): strength 0 is the upsample through the VAE, then back-projection.
        The output is `size` square, or `height` x `width`: the input's aspect, at least its size."""
        # 1. Settings: the call's, else the stage's, checked before any work
        s = self.settings.merged(steps=steps, strength=strength, guidance=guidance, appearance_scale=appearance_scale,
                                 back_projection=back_projection, size=size, width=width, height=height,
                                 hold_threshold=hold_threshold,
                                 back_projection_kernel=back_projection_kernel, context_length=context_length,
                                 context_stride=context_stride, cache_interval=cache_interval)
        video = video.unsqueeze(0) if video.ndim == 4 else video
        image = image.unsqueeze(0) if image.ndim == 3 else image
        if video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(f"expected low-res frames (3, F, h, w) or (B, 3, F, h, w), got {tuple(video.shape)}")
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"expected a reference image (3, H, W) or (B, 3, H, W), got {tuple(image.shape)}")
        big = frame_size(s)
        self.check_frame(*big)
        h, w = video.shape[-2:]
        if h > big[0] or w > big[1] or h * big[1] != w * big[0]:
            raise ValueError(f"expected frames of at most {big[0]}x{big[1]} (height x width) and of that aspect, "
                             f"got {h}x{w}")
        context = self.context(s.context_length, s.context_stride, video.shape[2])
        # 2. The prompt, encoded once
        if isinstance(prompt, PromptSchedule):  # prompt travel: one clip, a prompt per frame
            with self.on_device(self.text_encoder.model):
                cond, n = prompt.embed(self.text_encoder, video.shape[2]).to("cpu"), 1
        else:
            cond = prompt if isinstance(prompt, PromptEmbedding) else self.encode_prompt(prompt)
            n = len(cond)
        if video.shape[0] != n or image.shape[0] not in (1, n):
            raise ValueError(f"got {video.shape[0]} videos and {image.shape[0]} reference images for {n} prompts")
        image = image.expand(n, -1, -1, -1).float()
        # 3. The input upsampled and encoded: where the shortened schedule starts
        frames, latent = video.shape[2], [side // vae_factor(self.vae) for side in big]
        up = upsample(video, big)
        start = self.encode(up)
        seeds = seed_list(seed, n)
        noise = initial_noise(seeds, (self.vae.config.latent_channels, frames, *latent))
        noise = free_noise(noise, *context, seed=seeds[0])  # beyond one window: noise the windows share
        # 4. Denoise the last `strength` of the schedule; 5. decode, hold still detail, back-project
        cn = self.control(up, image, use_reference) if use_controlnet and self.controlnet is not None else None
        latents = self.denoise(cond, image, noise, s.steps, s.guidance, s.appearance_scale, cn, start=start,
                               strength=s.strength, progress=progress, desc="video-to-video",
                               context_length=context[0], context_stride=context[1],
                               cache_interval=s.cache_interval)
        out = hold_still_detail(self.decode(latents), video.float(), s.hold_threshold)
        if not s.back_projection:
            return V2VOutput(out)
        return V2VOutput(back_project(out, video.float(), s.back_projection, s.back_projection_kernel))
