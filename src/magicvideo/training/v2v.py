"""Train stage 3 on the world: `magicvideo train v2v --config configs/train/v2v_tiny.yaml --out
runs/v2v`; the same command after a kill resumes.

The I2V stage (shipped, or `i2v:` in the config) is frozen and shared: its spatial UNet, its
appearance encoder and branch, the VAE and the text encoder. Trained: this stage's own motion
module (started from I2V's) and its ControlNet (copied from the spatial UNet, reading the
upsampled frame and the reference). Targets: the 128x128 keyframe latents. Inputs, one of three
per clip and step, so the stage sees what it will be given:
- the true 64x64 keyframes;
- their round trip through the VAE (the blur and colour shifts of anything decoded at 64x64);
- real I2V outputs aligned with the truth: the I2V stage re-generating the true keyframes from
  partial noise (`i2v_strength`), for the first `i2v_clips` clips (it costs a sampling run each).
Training steps cover timesteps below `max_strength` of the schedule: sampling starts there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import MotionAdapter
from torch import nn
from tqdm import tqdm

from magicvideo.device import process_state
from magicvideo.diffusion.schedule import noise_scheduler
from magicvideo.diffusion.video import controlnet_from_unet, resize_reference
from magicvideo.latent import check_control_embedding, vae_factor
from magicvideo.presets import load_i2v
from magicvideo.presets.tiny import TINY_I2V
from magicvideo.stages.i2v import ImageToVideo
from magicvideo.stages.t2i import initial_noise
from magicvideo.stages.v2v import V2VSettings, VideoToVideo, upsample
from magicvideo.text import PromptEmbedding
from magicvideo.training.cache import cached, encode_captions
from magicvideo.training.common import start_run, write_card
from magicvideo.training.loop import LoopSettings, run_loop
from magicvideo.world import WorldClips

PROMPTS, CLIPS = "prompts.pt", "clips.pt"
INPUTS = ("truth", "vae", "i2v")


@dataclass(kw_only=True)
class V2VTrainConfig(LoopSettings):
    clips: int = 1200
    frames: int = 16
    window: int = 8  # consecutive keyframes per training clip
    low_size: int = 64
    size: int = 128
    i2v: str = ""  # empty: the shipped tiny I2V stage (on the shipped UNet and VAE)
    max_tokens: int = 40
    batch_size: int = 2
    steps: int = 3000
    lr: float = 1e-4
    warmup: int = 100
    max_strength: float = 0.7
    text_dropout: float = 0.1
    reference_dropout: float = 0.2  # the reference's ControlNet channels and appearance tokens blanked
    i2v_clips: int = 250
    i2v_strength: float = 0.5
    i2v_steps: int = 10
    controlnet_channels: tuple[int, ...] = (16, 32, 64, 128)


class V2VModules(nn.Module):
    """The trainable parts: the motion UNet (spatial layers frozen and shared) and the ControlNet."""

    def __init__(self, stage: VideoToVideo) -> None:
        super().__init__()
        self.unet = stage.unet
        self.controlnet = stage.controlnet


def build_stage(config: V2VTrainConfig, i2v: ImageToVideo, i2v_folder: Path) -> VideoToVideo:
    """The untrained stage: I2V's motion module as the starting point of its own, and a ControlNet
    copied from the spatial UNet with a 6-channel input (zero convolutions: a no-op at step 0)."""
    adapter = MotionAdapter.from_pretrained(i2v_folder / "motion_adapter", torch_dtype=torch.float32)
    check_control_embedding(config.controlnet_channels, i2v.vae)
    controlnet = controlnet_from_unet(i2v.spatial_unet(), conditioning_channels=6,
                                      conditioning_embedding_out_channels=config.controlnet_channels)
    stage = VideoToVideo.attach(i2v, adapter, controlnet, V2VSettings(size=config.size))
    stage.unet.requires_grad_(False)
    for name, p in stage.unet.named_parameters():
        if "motion_modules" in name:
            p.requires_grad_(True)
    controlnet.requires_grad_(True)
    return stage


@torch.no_grad()
def encode_clips(config: V2VTrainConfig, stage: VideoToVideo, hidden: torch.Tensor,
                 progress: bool = True, chunk: int = 4) -> dict[str, torch.Tensor]:
    """Per clip: the 128x128 keyframe latents (fp16), the reference (uint8), and the 64x64 frames
    of each input kind (uint8; zeros where a clip has no I2V input)."""
    data = WorldClips("train", config.seed, config.clips, keyframes=config.frames, low_size=config.low_size,
                      high_size=config.size, parts=("keyframes", "keyframes_hr"))
    n, f, h, lo = config.clips, config.frames, config.size // vae_factor(stage.vae), config.low_size
    i2v = stage.i2v
    out = {"target": torch.empty(n, stage.vae.config.latent_channels, f, h, h, dtype=torch.float16),
           "reference": torch.empty(n, 3, config.size, config.size, dtype=torch.uint8),
           "low": torch.zeros(n, len(INPUTS), 3, f, lo, lo, dtype=torch.uint8)}
    for first in tqdm(range(0, n, chunk), desc="encode train clips", disable=not progress):
        idx = list(range(first, min(first + chunk, n)))
        items = [data[i] for i in idx]
        low = torch.stack([it["keyframes"] for it in items])
        high = torch.stack([it["keyframes_hr"] for it in items])
        refs = high[:, :, 0]
        out["target"][idx] = stage.encode(high).half()
        out["reference"][idx] = (refs * 255).round().byte()
        z_low = i2v.encode(low)
        inputs = [low, i2v.decode(z_low)]
        todo = [k for k, i in enumerate(idx) if i < config.i2v_clips]
        if todo:
            sub = [idx[k] for k in todo]
            small = resize_reference(refs[todo], lo)
            noise = initial_noise([config.seed * 7919 + i for i in sub], tuple(z_low.shape[1:]))
            cond = hidden[sub].float()
            latents = i2v.denoise(PromptEmbedding(cond), refs[todo], noise, config.i2v_steps, i2v.settings.guidance,
                                  i2v.settings.appearance_scale, small.repeat_interleave(f, 0), start=z_low[todo],
                                  strength=config.i2v_strength)
            regenerated = torch.zeros_like(low)
            regenerated[todo] = i2v.decode(latents)
            inputs.append(regenerated)
        for k, video in enumerate(inputs):
            out["low"][idx, k] = (video * 255).round().byte()
    return out


def _batch(cache: dict[str, torch.Tensor], config: V2VTrainConfig, scheduler, step: int) -> dict[str, torch.Tensor]:
    """The batch of `step`, a function of (seed, step)."""
    g = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
    n, w = config.batch_size, config.window
    idx = torch.randint(len(cache["target"]), (n,), generator=g)
    kinds = torch.randint(len(INPUTS), (n,), generator=g)
    kinds = torch.where((kinds == 2) & (idx >= config.i2v_clips), kinds % 2, kinds)  # no i2v input there
    first = torch.randint(config.frames - w + 1, (n,), generator=g)
    window = first[:, None] + torch.arange(w)
    rows = torch.arange(n)[:, None]
    x0 = cache["target"][idx].float().transpose(1, 2)[rows, window].transpose(1, 2)  # (n, 4, w, h, h)
    low = cache["low"][idx, kinds].float().div(255).transpose(1, 2)[rows, window].transpose(1, 2)
    text = cache["hidden"][idx].float()
    text[torch.rand(n, generator=g) < config.text_dropout] = cache["empty_hidden"].float()
    keep = (torch.rand(n, generator=g) >= config.reference_dropout).float()
    noise = torch.randn(x0.shape, generator=g)
    t = torch.randint(0, int(scheduler.config.num_train_timesteps * config.max_strength), (n,), generator=g)
    return {"noisy": scheduler.add_noise(x0, noise, t), "t": t, "target": scheduler.get_velocity(x0, noise, t),
            "text": text, "reference": cache["reference"][idx].float() / 255, "keep": keep, "low": low}


def _loss(modules: V2VModules, stage: VideoToVideo, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    x = batch["noisy"]
    f = x.shape[2]
    keep = batch["keep"]
    reference = batch["reference"] * keep[:, None, None, None]
    text = batch["text"].repeat_interleave(f, 0)
    tokens = None
    if stage.appearance is not None:
        with torch.no_grad():
            tokens = stage.appearance(batch["reference"])
        tokens = (tokens * keep[:, None, None]).repeat_interleave(f, 0)
    up = upsample(batch["low"], stage.settings.size)
    frames = up.transpose(1, 2).reshape(-1, 3, *up.shape[-2:])
    control = torch.cat([frames, reference.repeat_interleave(f, 0)], dim=1)
    return F.mse_loss(stage.predict(x, batch["t"], text, tokens, control), batch["target"])


def train_v2v(config: V2VTrainConfig, out: str | Path, command: str = "", progress: bool = True) -> Path:
    out = start_run(config, out)
    state = process_state()
    i2v_folder = Path(config.i2v) if config.i2v else TINY_I2V
    i2v = load_i2v("tiny", i2v_folder)
    for module in (i2v.unet, i2v.vae, i2v.appearance, i2v.controlnet):
        if module is not None:
            module.requires_grad_(False)
    stage = build_stage(config, i2v, i2v_folder)
    with state.local_main_process_first():  # one process per machine makes the caches, the others read them
        cache = cached(out / PROMPTS, lambda: encode_captions(i2v.text_encoder, config.seed, config.clips,
                                                              progress=progress))
        cache.update(cached(out / CLIPS, lambda: encode_clips(config, stage, cache["hidden"], progress)))
    modules = V2VModules(stage)
    scheduler = noise_scheduler()
    result = run_loop(out / "state", modules, config, lambda s: _batch(cache, config, scheduler, s),
                      lambda m, b: _loss(m, stage, b), "train v2v", progress)
    if not state.is_main_process:
        return out / "final"
    stage.save_pretrained(out / "final")
    write_card(out / "final", "Video-to-video stage (tiny)", command, config, {}, result.steps, result.seconds,
               notes="Shares the image-to-video stage's spatial UNet, appearance encoder, VAE and text encoder "
                     "(frozen); this folder holds its own motion module and ControlNet.")
    return out / "final"
