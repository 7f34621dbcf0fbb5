"""Train stage 2 on the world: the stage-1 UNet frozen, the motion module (zero-initialised),
the appearance encoder with its cross-attention branch, and the ControlNet trained together,
on joint image-video batches. `magicvideo train i2v --config configs/train/i2v_tiny.yaml
--out runs/i2v`; the same command after a kill resumes.

Reference image = the clip's first frame; targets = its 16 keyframes at 64x64, 8 fps. Every
`image_every`-th step is an image batch instead: single frames as one-frame clips (the
paper's joint image-video training, which keeps frame quality up).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, MotionAdapter, UNet2DConditionModel
from torch import nn
from tqdm import tqdm

from magicvideo.device import process_state
from magicvideo.diffusion.schedule import noise_scheduler
from magicvideo.diffusion.video import controlnet_from_unet
from magicvideo.latent import check_control_embedding, vae_factor
from magicvideo.models.appearance import AppearanceEncoder, appearance_processors
from magicvideo.models.motion_lora import attach_motion_lora, has_motion_lora, motion_lora_parameters
from magicvideo.models.motion_text import attach_motion_text, motion_text_processors
from magicvideo.presets.tiny import TINY_UNET, TINY_UNET_VAE
from magicvideo.stages.i2v import I2VSettings, ImageToVideo, text_attention
from magicvideo.text import MiniLMTextEncoder
from magicvideo.training.cache import cached, encode_captions, in_workers
from magicvideo.training.common import start_run, write_card
from magicvideo.training.loop import LoopSettings, run_loop
from magicvideo.training.t2i import cell_coverage, object_weights
from magicvideo.world import WorldClips
from magicvideo.world.render import frame_times
from magicvideo.world.scene import KEYFRAME_FPS

PROMPTS, CLIPS, OBJECTS = "prompts.pt", "clips.pt", "objects.pt"


@dataclass(kw_only=True)
class I2VTrainConfig(LoopSettings):
    clips: int = 4000
    frames: int = 16
    size: int = 64
    t2i_unet: str = ""  # empty: the shipped tiny T2I UNet (frozen)
    vae: str = ""  # empty: the VAE the shipped tiny T2I UNet was trained with
    max_tokens: int = 40
    batch_size: int = 4  # clips per video batch
    image_batch_size: int = 32  # frames per image batch
    image_every: int = 4  # every k-th step is an image batch; 0: videos only
    steps: int = 3000
    lr: float = 1e-4
    warmup: int = 100
    text_dropout: float = 0.1
    image_dropout: float = 0.1  # appearance tokens and ControlNet input blanked together
    appearance: bool = True
    controlnet: bool = True
    motion_heads: int = 4
    appearance_grid: int = 4
    appearance_widths: tuple[int, ...] = (32, 64, 128)
    controlnet_channels: tuple[int, ...] = (16, 32, 64, 128)
    text_attention: bool = False  # also train the spatial UNet's text cross-attention keys and values
    motion_text: bool = False  # give the motion modules a caption branch (models/motion_text.py) and train it
    motion_lora: int = 0  # rank of a LoRA on the motion modules (models/motion_lora.py), trained; 0: none
    motion_weight: float = 0.0  # > 0: weigh the loss toward what moves (see _motion_weights); 0: plain v-MSE
    # > 0: weigh the loss toward the objects' latent cells in every frame (training.t2i.object_weights,
    # from the world's exact masks). Why: the objects cover a tenth of the cells, and a 4x run that had
    # learnt to copy its reference's background drew the objects in the wrong colour
    object_weight: float = 0.0
    freeze: tuple[str, ...] = ()  # of "motion_modules", "appearance", "controlnet": kept as they are
    # the latent noise prior the trained stage samples with (its stage.json): the shipped tiny stage's
    # tuned values. Why a default and not 0: measured on the 4x run's step 3,200 (40 validation clips),
    # sampling from plain noise kept 0.26 of the frames' shapes and 18.8 dB on the first frame, the
    # prior 0.35 and 23.6 dB (benchmarks/results/i2v_curve_4x_3200_*.md)
    noise_prior: float = 0.3
    noise_prior_decay: float = 1.0
    init: str = ""  # a saved I2V stage to fine-tune (its architecture wins over the fields above); empty: new
    workers: int = 0  # processes drawing the training clips before the loop; 0: this one


class I2VModules(nn.Module):
    """What one training run holds: the stage's modules, the frozen ones included."""

    def __init__(self, stage: ImageToVideo) -> None:
        super().__init__()
        self.unet = stage.unet
        self.appearance = stage.appearance
        self.controlnet = stage.controlnet


def build_stage(config: I2VTrainConfig, unet: UNet2DConditionModel, vae: AutoencoderKL,
                text: MiniLMTextEncoder) -> ImageToVideo:
    """The untrained stage: the T2I UNet inflated with a zero-initialised motion adapter, a new
    appearance encoder and a ControlNet copied from the UNet (its zero convolutions make it a no-op
    at step 0). Only the spatial UNet is frozen."""
    adapter = MotionAdapter(block_out_channels=unet.config.block_out_channels,
                            motion_layers_per_block=unet.config.layers_per_block,
                            motion_num_attention_heads=config.motion_heads,
                            motion_norm_num_groups=unet.config.norm_num_groups,
                            motion_max_seq_length=32, use_motion_mid_block=False)
    # AnimateDiff starts each motion module's output projection at zero, so the inflated UNet is
    # the image UNet on every frame at step 0; diffusers' MotionAdapter draws it at random.
    for name, p in adapter.named_parameters():
        if name.endswith(("proj_out.weight", "proj_out.bias")):
            torch.nn.init.zeros_(p)
    appearance = (AppearanceEncoder(image_size=config.size, widths=config.appearance_widths,
                                    grid=config.appearance_grid, dim=text.dim) if config.appearance else None)
    if config.controlnet:
        check_control_embedding(config.controlnet_channels, vae)
    controlnet = (controlnet_from_unet(unet, conditioning_embedding_out_channels=config.controlnet_channels)
                  if config.controlnet else None)
    stage = ImageToVideo.inflate(unet, vae, text, adapter, appearance, controlnet,
                                 I2VSettings(size=config.size, frames=config.frames, noise_prior=config.noise_prior,
                                             noise_prior_decay=config.noise_prior_decay))
    return _set_trainable(stage, config)


def initial_stage(config: I2VTrainConfig, vae: AutoencoderKL, text: MiniLMTextEncoder) -> ImageToVideo:
    """The stage a run starts from (a run's snapshots hold its trainable weights over this): its
    `init`, a saved stage, made trainable as the config says, or a new one (build_stage)."""
    if config.init:
        return _set_trainable(ImageToVideo.from_pretrained(config.init, unet=config.t2i_unet or TINY_UNET,
                                                           vae=config.vae or TINY_UNET_VAE), config)
    unet = UNet2DConditionModel.from_pretrained(config.t2i_unet or TINY_UNET, torch_dtype=torch.float32)
    return build_stage(config, unet, vae, text)


FREEZABLE = ("motion_modules", "appearance", "controlnet")


def _set_trainable(stage: ImageToVideo, config: I2VTrainConfig) -> ImageToVideo:
    """Freeze the spatial UNet; train the motion modules, the appearance branch and the ControlNet
    unless `config.freeze` names them (and, with `text_attention`, the spatial layers' text keys and
    values; with `motion_text`, the motion modules' caption branch, attached here if new; with
    `motion_lora`, a LoRA of that rank on the motion modules, attached here if new)."""
    unknown = set(config.freeze) - set(FREEZABLE)
    if unknown:
        raise ValueError(f"freeze: unknown part(s) {sorted(unknown)}; expected some of {FREEZABLE}")
    if config.motion_text and not motion_text_processors(stage.unet):
        attach_motion_text(stage.unet, stage.text_encoder.dim)
    if config.motion_lora and not has_motion_lora(stage.unet):
        attach_motion_lora(stage.unet, config.motion_lora)
    stage.unet.requires_grad_(False)
    if "motion_modules" not in config.freeze:
        for name, p in stage.unet.named_parameters():
            if "motion_modules" in name and ".processor." not in name:
                p.requires_grad_(True)
    if stage.appearance is not None:
        train = "appearance" not in config.freeze
        appearance_processors(stage.unet).requires_grad_(train)
        stage.appearance.requires_grad_(train)
    if stage.controlnet is not None:
        stage.controlnet.requires_grad_("controlnet" not in config.freeze)
    if config.motion_text:
        motion_text_processors(stage.unet).requires_grad_(True)
    if config.motion_lora:
        for p in motion_lora_parameters(stage.unet):
            p.requires_grad_(True)
    if config.text_attention:
        for p in text_attention(stage.unet).values():
            p.requires_grad_(True)
        stage.tuned_text_attention = True
    return stage


def _draw_keyframes(job: tuple[int, int, int, int, int]) -> np.ndarray:
    """Keyframes of train clips start..stop-1, (n, 3, F, size, size) float32: one worker's share."""
    seed, start, stop, frames, size = job
    data = WorldClips("train", seed, stop, keyframes=frames, low_size=size, parts=("keyframes",))
    return np.stack([data[i]["keyframes"].numpy() for i in range(start, stop)])


def _draw_coverage(job: tuple[int, int, int, int, int, int]) -> np.ndarray:
    """(n, 1, F, size/f, size/f) float32: training.t2i.cell_coverage of train clips start..stop-1 at
    their keyframes' instants."""
    seed, start, stop, frames, size, factor = job
    data = WorldClips("train", seed, stop, keyframes=frames, low_size=size, parts=())
    times = frame_times(KEYFRAME_FPS, frames)
    return torch.stack([cell_coverage(data.clip(i).scene, size, times, factor) for i in range(start, stop)]).numpy()


def object_coverage_cache(config: I2VTrainConfig, factor: int, progress: bool = True) -> dict[str, torch.Tensor]:
    """Latent-cell object coverage (fp16, (N, 1, F, h, w)) of the train clips' keyframes."""
    jobs = [(config.seed, start, min(start + 100, config.clips), config.frames, config.size, factor)
            for start in range(0, config.clips, 100)]
    parts = tqdm(in_workers(_draw_coverage, jobs, config.workers), total=len(jobs), desc="object masks",
                 disable=not progress)
    return {"objects": torch.from_numpy(np.concatenate(list(parts))).half()}


@torch.no_grad()
def encode_clips(config: I2VTrainConfig, vae: AutoencoderKL, progress: bool = True) -> dict[str, torch.Tensor]:
    """Keyframe latents (fp16, (N, 4, F, h, w)) and first frames (uint8, (N, 3, size, size)).
    Clips are drawn by `config.workers` processes (the world renders on the CPU) and encoded on the
    accelerator when there is one."""
    h, chunk = config.size // vae_factor(vae), 50
    latents = torch.empty(config.clips, vae.config.latent_channels, config.frames, h, h, dtype=torch.float16)
    firsts = torch.empty(config.clips, 3, config.size, config.size, dtype=torch.uint8)
    jobs = [(config.seed, start, min(start + chunk, config.clips), config.frames, config.size)
            for start in range(0, config.clips, chunk)]
    vae = vae.to(process_state().device)
    with tqdm(total=config.clips, desc="encode train keyframes", disable=not progress) as bar:
        for (_, start, stop, _, _), frames in zip(jobs, in_workers(_draw_keyframes, jobs, config.workers),
                                                   strict=True):
            frames = torch.from_numpy(frames)  # (n, 3, F, H, W)
            flat = frames.transpose(1, 2).reshape(-1, 3, config.size, config.size)
            z = torch.cat([vae.encode(part.to(vae.device) * 2 - 1).latent_dist.mode() for part in flat.split(256)])
            z = z * vae.config.scaling_factor
            latents[start:stop] = z.reshape(stop - start, config.frames, -1, h, h).transpose(1, 2).half().cpu()
            firsts[start:stop] = (frames[:, :, 0] * 255).round().byte()
            bar.update(stop - start)
    vae.to("cpu")
    return {"latents": latents, "firsts": firsts}


def _batch(cache: dict[str, torch.Tensor], config: I2VTrainConfig, scheduler, step: int) -> dict[str, torch.Tensor]:
    """The batch of `step`, a function of (seed, step): a video batch, or every `image_every`-th
    step an image batch of single frames (each with its own clip's first frame as reference)."""
    g = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
    images = config.image_every > 0 and step % config.image_every == config.image_every - 1
    n = config.image_batch_size if images else config.batch_size
    idx = torch.randint(len(cache["latents"]), (n,), generator=g)
    x0 = cache["latents"][idx].float()
    objects = cache["objects"][idx] if config.object_weight else None
    if images:
        frame = torch.randint(config.frames, (n,), generator=g)
        x0 = x0[torch.arange(n), :, frame].unsqueeze(2)  # (n, 4, 1, h, w)
        objects = objects[torch.arange(n), :, frame].unsqueeze(2) if objects is not None else None
    reference = cache["firsts"][idx].float() / 255
    text = cache["hidden"][idx].float()
    drop_text = torch.rand(n, generator=g) < config.text_dropout
    text[drop_text] = cache["empty_hidden"].float()
    keep_image = (torch.rand(n, generator=g) >= config.image_dropout).float()
    noise = torch.randn(x0.shape, generator=g)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (n,), generator=g)
    batch = {"noisy": scheduler.add_noise(x0, noise, t), "t": t, "target": scheduler.get_velocity(x0, noise, t),
             "text": text, "reference": reference, "keep_image": keep_image}
    weight = torch.ones(n, 1, *x0.shape[2:])
    if config.motion_weight > 0:
        weight = weight * _motion_weights(x0, config.motion_weight)
    if objects is not None:
        weight = weight * object_weights(objects, config.object_weight)
    if config.motion_weight > 0 or objects is not None:  # both: their product, again of mean 1 per clip
        batch["weight"] = weight / weight.mean(dim=(1, 2, 3, 4), keepdim=True)
    return batch


def _motion_weights(x0: torch.Tensor, strength: float) -> torch.Tensor:
    """Loss weights (n, 1, F, h, w) that favour where the clip moves: 1 + strength * d / mean(d),
    d = how far each latent cell of each frame is from the clip's mean over frames (channels
    averaged). Why: a moving object covers a cell or two of the 8x8 latent, so plain MSE is almost
    all still background and barely asks the motion modules for the motion. Normalised to mean 1
    per clip, so the loss keeps its scale; a still clip or a one-frame batch gets weight 1."""
    d = (x0 - x0.mean(dim=2, keepdim=True)).abs().mean(dim=1, keepdim=True)
    mean = d.mean(dim=(2, 3, 4), keepdim=True)
    weight = 1 + strength * torch.where(mean > 1e-6, d / mean.clamp(min=1e-6), torch.zeros_like(d))
    return weight / weight.mean(dim=(2, 3, 4), keepdim=True)


def _loss(modules: I2VModules, stage: ImageToVideo, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    x = batch["noisy"]
    f = x.shape[2]
    keep = batch["keep_image"][:, None, None, None]
    text = batch["text"].repeat_interleave(f, 0)
    tokens = control = None
    if modules.appearance is not None:
        tokens = (modules.appearance(batch["reference"]) * keep[:, :, :, 0]).repeat_interleave(f, 0)
    if modules.controlnet is not None:
        control = (batch["reference"] * keep).repeat_interleave(f, 0)
    pred = stage.predict(x, batch["t"], text, tokens, control)
    if "weight" in batch:
        return (batch["weight"] * (pred - batch["target"]).pow(2)).mean()
    return F.mse_loss(pred, batch["target"])


def train_i2v(config: I2VTrainConfig, out: str | Path, command: str = "", progress: bool = True) -> Path:
    # the sampling prior the stage will carry, checked before any encoding
    I2VSettings(noise_prior=config.noise_prior, noise_prior_decay=config.noise_prior_decay).check()
    out = start_run(config, out)
    state = process_state()
    fp32 = {"torch_dtype": torch.float32}
    vae = AutoencoderKL.from_pretrained(config.vae or TINY_UNET_VAE, **fp32).eval()
    text = MiniLMTextEncoder.from_pretrained(max_tokens=config.max_tokens).to(state.device)
    with state.local_main_process_first():  # one process per machine makes the caches, the others read them
        cache = cached(out / PROMPTS, lambda: encode_captions(text, config.seed, config.clips, progress=progress))
        cache.update(cached(out / CLIPS, lambda: encode_clips(config, vae, progress)))
        if config.object_weight:
            cache.update(cached(out / OBJECTS, lambda: object_coverage_cache(config, vae_factor(vae), progress)))
    text.to("cpu")
    stage = initial_stage(config, vae, text)
    modules = I2VModules(stage)
    scheduler = noise_scheduler()
    result = run_loop(out / "state", modules, config, lambda s: _batch(cache, config, scheduler, s),
                      lambda m, b: _loss(m, stage, b), "train i2v", progress)
    if not state.is_main_process:
        return out / "final"
    stage.save_pretrained(out / "final")
    write_card(out / "final", "Image-to-video stage (tiny)", command, config, {}, result.steps, result.seconds,
               notes="Spatial UNet and VAE: the shipped tiny stage-1 weights, frozen.")
    return out / "final"
