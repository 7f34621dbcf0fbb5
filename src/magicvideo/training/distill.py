"""Few-step stage 1: latent consistency distillation (Luo et al. 2023, "Latent Consistency
Models"; as a LoRA, Luo et al. 2023, "LCM-LoRA") of a stage-1 UNet and its classifier-free
guidance into a LoRA over it, sampled in 1-8 steps without guidance by diffusers' LCMScheduler.

    magicvideo train distill --config configs/train/distill_tiny.yaml --out runs/lcm
    magicvideo t2i "a red circle over a meadow" --weights runs/lcm/final   # 4 steps, one pass each

One training step: a cached train latent is noised to a timestep t of the teacher's LCM_GRID-point
grid; the teacher, guided at `guidance`, takes one DDIM step from t to the grid's previous point
s; the student's consistency function at (x_t, t) is pulled toward its own (no gradient) at
(x_s, s). Consistency functions are the x0 prediction blended with the input by the boundary
scalings diffusers' LCMScheduler samples with, so training and sampling agree by construction.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import LCMScheduler, UNet2DConditionModel

from magicvideo.device import Placement, process_state
from magicvideo.diffusion.schedule import LCM_GRID, lcm_sampler
from magicvideo.latent import vae_factor
from magicvideo.models.lora import attach_lora
from magicvideo.presets import load_t2i
from magicvideo.presets.tiny import TINY_T2I
from magicvideo.stages.t2i import LORA_NAME, LORA_TARGETS, TextToImage, save_t2i_lora
from magicvideo.text import unet_text_inputs
from magicvideo.training.cache import cached, encode_captions
from magicvideo.training.common import start_run, write_card
from magicvideo.training.loop import LoopSettings, run_loop
from magicvideo.training.t2i import LATENTS, PROMPTS, T2ITrainConfig, encode_images


@dataclass(kw_only=True)
class DISTILLTrainConfig(LoopSettings):
    teacher: str = ""  # the stage-1 folder distilled; empty: the shipped tiny stage 1
    data: str = ""  # a `magicvideo train t2i` run folder whose caches to reuse; empty: encode `samples` here
    samples: int = 10000  # train images encoded when `data` is empty
    size: int = 128
    lora: int = 16  # rank of the student's LoRA over the teacher
    guidance: float = 0.0  # the teacher's classifier-free guidance; 0: the teacher stage's default
    sample_steps: int = 4  # the student's default sampler steps, written into its folder
    huber_c: float = 0.001  # pseudo-Huber loss scale (LCM's choice over plain MSE)
    batch_size: int = 16
    steps: int = 2000
    lr: float = 1e-4
    warmup: int = 100
    ema_decay: float = 0.99
    eval_prompts: int = 100  # held-out prompts judged for the card, the teacher at its defaults beside


def _x0(v: torch.Tensor, x: torch.Tensor, a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return a * x - s * v  # a v-prediction's clean latent; a = sqrt(alpha_bar), s = sqrt(1 - alpha_bar)


def _eps(v: torch.Tensor, x: torch.Tensor, a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return s * x + a * v


def _boundary(scheduler: LCMScheduler, t: torch.Tensor, ndim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(c_skip, c_out) per timestep, shaped to broadcast over latents of `ndim` dimensions:
    LCMScheduler's own."""
    pairs = [scheduler.get_scalings_for_boundary_condition_discrete(int(step)) for step in t]
    return tuple(torch.tensor(c, dtype=torch.float32).view(-1, *[1] * (ndim - 1)) for c in zip(*pairs, strict=True))


Predict = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (latents, timesteps) -> v-prediction


def consistency_step(student: Predict, teacher: Predict, x0: torch.Tensor, noise: torch.Tensor, index: torch.Tensor,
                     skip: int, huber_c: float, scheduler: LCMScheduler) -> torch.Tensor:
    """One LCM step's loss on latents of any shape (B, ...): images or videos. `teacher` is the
    guided teacher's prediction; `index` the grid points (t = (index + 1) * skip - 1)."""
    t = (index + 1) * skip - 1
    s = (t - skip).clamp(min=0)
    bars = scheduler.alphas_cumprod.to(x0.device)
    shape = (-1, *[1] * (x0.ndim - 1))

    def scales(step: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bar = bars[step].view(shape)
        return bar.sqrt(), (1 - bar).sqrt()

    (a_t, s_t), (a_s, s_s) = scales(t), scales(s)
    x_t = a_t * x0 + s_t * noise
    (skip_t, out_t), (skip_s, out_s) = (tuple(c.to(x0.device) for c in _boundary(scheduler, v, x0.ndim))
                                        for v in (t, s))
    online = skip_t * x_t + out_t * _x0(student(x_t, t), x_t, a_t, s_t)
    with torch.no_grad():
        v = teacher(x_t, t)
        x_s = a_s * _x0(v, x_t, a_t, s_t) + s_s * _eps(v, x_t, a_t, s_t)  # the teacher's DDIM step t -> s
        target = skip_s * x_s + out_s * _x0(student(x_s, s), x_s, a_s, s_s)
    return (((online - target) ** 2 + huber_c**2).sqrt() - huber_c).mean()


def guided(predict: Callable[[torch.Tensor, torch.Tensor, bool], torch.Tensor], guidance: float) -> Predict:
    """predict(x, t, conditional) -> the classifier-free guided prediction at `guidance`."""
    def call(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        v = predict(x, t, True)
        if guidance > 1.0:
            v_empty = predict(x, t, False)
            v = v_empty + guidance * (v - v_empty)
        return v
    return call


def consistency_loss(student: torch.nn.Module, teacher: torch.nn.Module, batch, guidance: float, skip: int,
                     huber_c: float, scheduler: LCMScheduler) -> torch.Tensor:
    """Stage 1's LCM loss (see the module's docstring). `batch`: clean latents, noise, the text
    states, the empty prompt's, and grid indices."""
    x0, noise, hidden, empty, index = batch

    def call(model: torch.nn.Module, x: torch.Tensor, step: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return model(x, step, text, **unet_text_inputs(model, text)).sample.float()

    return consistency_step(lambda x, t: call(student, x, t, hidden),
                            guided(lambda x, t, cond: call(teacher, x, t, hidden if cond else empty), guidance),
                            x0, noise, index, skip, huber_c, scheduler)


def _batch(cache: dict[str, torch.Tensor], config: DISTILLTrainConfig, step: int):
    g = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
    n = config.batch_size
    idx = torch.randint(len(cache["latents"]), (n,), generator=g)
    x0 = cache["latents"][idx].float()
    noise = torch.randn(x0.shape, generator=g)
    index = torch.randint(LCM_GRID, (n,), generator=g)
    empty = cache["empty_hidden"].float().expand(n, -1, -1)
    return x0, noise, cache["hidden"][idx].float(), empty, index


def train_distill(config: DISTILLTrainConfig, out: str | Path, command: str = "", progress: bool = True) -> Path:
    from magicvideo.judge.t2i import evaluate_t2i

    out = start_run(config, out)
    state = process_state()
    teacher_stage = load_t2i("tiny", config.teacher or None)
    guidance = config.guidance or teacher_stage.settings.guidance
    data = Path(config.data) if config.data else out
    if config.data and not (data / LATENTS).is_file():
        raise FileNotFoundError(f"{data} holds no cached latents ({LATENTS}): give a `magicvideo train t2i` run folder")
    source = T2ITrainConfig(seed=config.seed, samples=config.samples, size=config.size)
    with state.local_main_process_first():
        cache = cached(data / PROMPTS, lambda: encode_captions(teacher_stage.text_encoder, config.seed,
                                                               config.samples, progress=progress))
        cache.update(cached(data / LATENTS, lambda: encode_images(source, teacher_stage.vae, progress)))
    f = vae_factor(teacher_stage.vae)
    want = (teacher_stage.unet.config.in_channels, config.size // f, config.size // f)
    if tuple(cache["latents"].shape[1:]) != want:
        raise ValueError(f"{data / LATENTS} holds latents of shape {tuple(cache['latents'].shape[1:])}; the "
                         f"teacher's VAE at size {config.size} makes {want}")
    teacher = copy.deepcopy(teacher_stage.unet).eval().requires_grad_(False)
    student: UNet2DConditionModel = teacher_stage.unet
    student.requires_grad_(False)
    attach_lora(student, LORA_NAME, LORA_TARGETS, config.lora)
    scheduler = lcm_sampler()
    skip = scheduler.config.num_train_timesteps // LCM_GRID

    def loss(model, batch) -> torch.Tensor:
        return consistency_loss(model, teacher.to(batch[0].device), batch, guidance, skip, config.huber_c, scheduler)

    result = run_loop(out / "state", student, config, lambda s: _batch(cache, config, s), loss, "train distill",
                      progress)
    if not state.is_main_process:
        return out / "final"
    final = out / "final"
    settings = {"sampler": "lcm", "steps": config.sample_steps, "guidance": 1.0}
    save_t2i_lora(result.model, final, stage=config.teacher or TINY_T2I, settings=settings)
    metrics: dict = {"teacher_guidance": guidance}
    if config.eval_prompts:
        place = Placement(device=str(student.device))
        distilled = TextToImage.from_pretrained(final).place(place)  # as a user loads it, so the folder is checked
        # the teacher as it was: its frozen UNet copy, with the stage's VAE, text encoder and settings
        frozen = TextToImage(teacher, teacher_stage.vae, teacher_stage.text_encoder, teacher_stage.settings)
        frozen.place(place)
        for name, stage in (("student", distilled), ("teacher", frozen)):
            metrics[name] = evaluate_t2i(stage, "heldout", config.eval_prompts, progress=progress)["accuracy"]
        metrics["eval"] = (f"{config.eval_prompts} held-out prompts (seed 777), one image each at seed 0: the "
                           f"student at {config.sample_steps} LCM steps unguided, the teacher at its defaults")
    write_card(final, "Text-to-image UNet (tiny), few-step LoRA (latent consistency distillation)", command, config,
               metrics, result.steps, result.seconds,
               notes=f"A LoRA over {config.teacher or 'the shipped tiny stage 1'}, distilled from it at guidance "
                     f"{guidance:g}; its folder sets the LCM sampler, {config.sample_steps} steps, no guidance.")
    print(json.dumps(metrics))
    return final
