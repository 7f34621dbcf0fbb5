"""Train the tiny preset's VAE (diffusers AutoencoderKL, 4 latent channels; 4x down: three
levels) on world frames. `magicvideo train vae --config configs/train/vae_tiny.yaml --out runs/vae`; the same
command after a kill resumes. `init` + `train_encoder: false` fine-tunes the decoder of a trained
VAE without moving its latent space (configs/train/vae_decoder_tiny.yaml)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from tqdm import tqdm

from magicvideo.device import process_state
from magicvideo.judge.metrics import psnr
from magicvideo.latent import vae_factor
from magicvideo.media import atomic_path
from magicvideo.training.common import start_run, write_card
from magicvideo.training.loop import LoopSettings, run_loop
from magicvideo.world import draw_clip, render_frames
from magicvideo.world.scene import CLIP_SECONDS

CACHE = "frames.pt"


@dataclass(kw_only=True)
class VAETrainConfig(LoopSettings):
    samples: int = 12000
    size: int = 128
    crop: int = 64
    batch_size: int = 16
    steps: int = 2500
    lr: float = 3e-4
    warmup: int = 100
    ema_decay: float = 0.995
    kl_weight: float = 1e-6
    widths: tuple[int, ...] = (32, 64, 128, 128)
    layers_per_block: int = 1
    eval_frames: int = 64
    init: str = ""  # start from this VAE folder (e.g. the shipped one) instead of random weights
    # start from this VAE folder's filters, its innermost levels dropped (an 8x VAE warm-starts a 4x one)
    init_outer: str = ""
    train_encoder: bool = True  # False: decoder only; the latent space and its scaling factor stay
    # the share of each batch that is whole frames pooled to the crop size (the 64x64 keyframes'
    # objects, half the size of a crop's); the rest are crops at full size
    pooled_share: float = 0.5


def build_vae(config: VAETrainConfig) -> AutoencoderKL:
    n = len(config.widths)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=config.widths, layers_per_block=config.layers_per_block,
        norm_num_groups=16, sample_size=config.size,
    )


def transplant_outer_levels(src: AutoencoderKL, dst: AutoencoderKL) -> int:
    """Copy `src`'s outer levels into `dst`, which has fewer: encoder down block i and decoder up
    block i from the output side carry over, and so do the mid blocks and the convs in and out;
    the downsampler of dst's last level (which it lacks) is left out. Returns how many tensors
    were copied. The latent space is new either way; the learned edge and colour filters are not."""
    drop = len(src.config.block_out_channels) - len(dst.config.block_out_channels)
    if drop < 0:
        raise ValueError("init_outer must name a VAE with at least as many levels")
    mapped = {}
    for key, value in src.state_dict().items():
        parts = key.split(".")
        if parts[:2] == ["decoder", "up_blocks"]:
            j = int(parts[2]) - drop
            if j < 0:
                continue
            parts[2] = str(j)
        mapped[".".join(parts)] = value
    target = dst.state_dict()
    keep = {k: v for k, v in mapped.items() if k in target and target[k].shape == v.shape}
    dst.load_state_dict(keep, strict=False)
    return len(keep)


def world_frames(seed: int, split: str, count: int, size: int, progress: bool = True) -> torch.Tensor:
    """`count` frames (uint8, (N, 3, size, size)), one per clip, each at a random instant of the
    clip: the VAE sees reference images and every later frame the video stages encode."""
    rng = np.random.default_rng([seed, 99])
    out = torch.empty(count, 3, size, size, dtype=torch.uint8)
    for i in tqdm(range(count), desc=f"render {split} frames", disable=not progress):
        t = float(rng.uniform(0, CLIP_SECONDS))
        out[i] = (render_frames(draw_clip(seed, split, i).scene, size, [t])[:, 0] * 255).round().byte()
    return out


def _batch(frames: torch.Tensor, config: VAETrainConfig, step: int,
           latent: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Random crops at full resolution and, `pooled_share` of the batch, whole frames pooled to the
    crop size (the VAE serves both the 128x128 stages and the 64x64 keyframes), and the posterior's noise for them
    (`latent`: the VAE's latent channels and factor): drawn with the batch, so each process's
    share of it is the one a single process would use."""
    g = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
    idx = torch.randint(len(frames), (config.batch_size,), generator=g)
    x = frames[idx].float() / 255
    c, crops = config.crop, config.batch_size - round(config.batch_size * config.pooled_share)
    ys, xs = torch.randint(0, config.size - c + 1, (2, crops), generator=g).tolist()
    cut = [x[i, :, y : y + c, xx : xx + c] for i, (y, xx) in enumerate(zip(ys, xs))]
    pooled = F.interpolate(x[crops:], size=(c, c), mode="area")
    channels, factor = latent
    noise = torch.randn(config.batch_size, channels, c // factor, c // factor, generator=g)
    return torch.cat((torch.stack(cut), pooled) if cut else (pooled,)), noise


@torch.no_grad()
def reconstruct(vae: AutoencoderKL, images: torch.Tensor, batch: int = 16) -> torch.Tensor:
    """Encode (posterior mean) and decode images in [0, 1]."""
    outs = []
    for chunk in images.split(batch):
        latents = vae.encode(chunk * 2 - 1).latent_dist.mode()
        outs.append(((vae.decode(latents).sample + 1) / 2).clamp(0, 1))
    return torch.cat(outs)


@torch.no_grad()
def evaluate(vae: AutoencoderKL, count: int, progress: bool = False) -> dict[str, float]:
    """Reconstruction PSNR on held-out frames (seed 777) at 128x128 and 64x64."""
    metrics = {}
    for size in (128, 64):
        frames = world_frames(777, "heldout", count, size, progress).float() / 255
        metrics[f"psnr_{size}"] = round(psnr(reconstruct(vae, frames), frames), 3)
    return metrics


@torch.no_grad()
def latent_scale(vae: AutoencoderKL, frames: torch.Tensor) -> float:
    """1 / std of the latents, so the diffusion stages see unit-variance latents (as SD's 0.18215)."""
    lat = torch.cat([vae.encode(c.float() / 255 * 2 - 1).latent_dist.mode() for c in frames.split(32)])
    return float(1.0 / lat.std())


def train_vae(config: VAETrainConfig, out: str | Path, command: str = "", progress: bool = True) -> Path:
    out = start_run(config, out)
    state = process_state()
    with state.local_main_process_first():  # one process per machine renders the frames, the others read them
        if (out / CACHE).is_file():
            frames = torch.load(out / CACHE, weights_only=True)
        else:
            frames = world_frames(config.seed, "train", config.samples, config.size, progress)
            with atomic_path(out / CACHE) as tmp:
                torch.save(frames, tmp)
    if config.init:
        vae = AutoencoderKL.from_pretrained(config.init, torch_dtype=torch.float32)
    else:
        vae = build_vae(config)
        if config.init_outer:
            source = AutoencoderKL.from_pretrained(config.init_outer, torch_dtype=torch.float32)
            copied = transplant_outer_levels(source, vae)
            print(f"init_outer: {copied} of {len(vae.state_dict())} tensors from {config.init_outer}")
    if not config.train_encoder:
        # A frozen encoder keeps every latent the diffusion stages were trained on valid: only the
        # decoder (and post_quant_conv) learns to draw them better.
        vae.requires_grad_(False)
        vae.decoder.requires_grad_(True)
        vae.post_quant_conv.requires_grad_(True)

    def loss(model: AutoencoderKL, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, noise = batch
        posterior = model.encode(x * 2 - 1).latent_dist
        recon = model.decode(posterior.mean + posterior.std * noise).sample
        return F.l1_loss(recon, x * 2 - 1) + config.kl_weight * posterior.kl().mean()

    latent = vae.config.latent_channels, vae_factor(vae)
    result = run_loop(out / "state", vae, config, lambda s: _batch(frames, config, s, latent), loss, "train vae",
                      progress)
    if not state.is_main_process:
        return out / "final"
    vae = result.model
    if config.train_encoder:
        vae.register_to_config(scaling_factor=latent_scale(vae, frames[:512]))
    metrics = evaluate(vae, config.eval_frames) if config.eval_frames else {}
    metrics["scaling_factor"] = round(vae.config.scaling_factor, 5)
    metrics["eval"] = f"{config.eval_frames} held-out frames (seed 777, one per clip, random instant)"
    vae.save_pretrained(out / "final")
    factor = 2 ** (len(config.widths) - 1)
    write_card(out / "final", f"VAE (tiny): AutoencoderKL, {factor}x down, 4 latent channels", command, config,
               metrics, result.steps, result.seconds)
    print(metrics)
    return out / "final"
