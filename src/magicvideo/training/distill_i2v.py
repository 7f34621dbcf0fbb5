"""Few-step stage 2: latent consistency distillation of the image-to-video stage (as AnimateLCM,
Wang et al. 2024, distils AnimateDiff) into a LoRA over its motion UNet, sampled in 1-8 steps
without guidance by diffusers' LCMScheduler.

    magicvideo train distill-i2v --config configs/train/distill_i2v_tiny.yaml --out runs/lcm_i2v
    magicvideo i2v "a red circle moves left over a meadow" --image ref.png --weights runs/lcm_i2v/final

The loss is stage 1's (training/distill.py) on video latents: a train clip's keyframe latents
noised to a grid timestep t; the teacher stage, with everything that conditions it at sampling
(the prompt, the motion caption, the appearance tokens and the ControlNet on the reference, the
clip's first frame) and guided at its own scale, takes one DDIM step t -> s; the student's
consistency function at (x_t, t) is pulled toward its own at (x_s, s). The LoRA covers the spatial
layers and the motion modules alike (one update of the whole denoiser; AnimateLCM trains the two
apart to reuse an image LCM, which we do not need). The appearance encoder and the ControlNet stay
the teacher's: they read the reference, not the noise, so the teacher's readings of it are the
student's inputs as they are.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from magicvideo.device import Placement, process_state
from magicvideo.diffusion.schedule import LCM_GRID, lcm_sampler
from magicvideo.latent import vae_factor
from magicvideo.models.lora import attach_lora, fuse_lora
from magicvideo.presets import load_i2v
from magicvideo.presets.tiny import TINY_I2V
from magicvideo.settings import I2VSettings
from magicvideo.stages.i2v import LORA_NAME, ImageToVideo, save_stage_lora
from magicvideo.training.cache import cached, encode_captions
from magicvideo.training.common import start_run, write_card
from magicvideo.training.distill import consistency_step, guided
from magicvideo.training.i2v import CLIPS, PROMPTS, I2VTrainConfig, encode_clips
from magicvideo.training.loop import LoopSettings, run_loop

# every linear layer of the spatial transformers and the motion modules, and the resnets' convolutions;
# not the motion modules' proj_in / proj_out (diffusers calls them with a keyword peft's layers do not take)
TARGETS = (r"(?!.*motion_modules\.\d+\.proj_(in|out)$)"
           r".*((attn1|attn2)\.(to_q|to_k|to_v|to_out\.0)|ff\.net\.(0\.proj|2)|proj_in|proj_out"
           r"|resnets\.\d+\.(conv1|conv2))")


@dataclass(kw_only=True)
class DISTILL_I2VTrainConfig(LoopSettings):  # noqa: N801 (the trainer registry's name: DISTILL_I2V + TrainConfig)
    teacher: str = ""  # the stage-2 folder distilled; empty: the shipped tiny stage 2
    data: str = ""  # a `magicvideo train i2v` run folder whose caches to reuse; empty: encode `clips` here
    clips: int = 2000  # train clips encoded when `data` is empty
    lora: int = 16  # rank of the student's LoRA over the teacher's motion UNet
    guidance: float = 0.0  # the teacher's classifier-free guidance; 0: the teacher stage's default
    sample_steps: int = 4  # the student's default sampler steps, written into its folder
    sample_timesteps: tuple[int, ...] = ()  # and the timesteps it takes them at (highest first); empty: LCM's own
    huber_c: float = 0.001  # pseudo-Huber loss scale (LCM's choice over plain MSE)
    batch_size: int = 4  # clips a step
    steps: int = 2000
    lr: float = 1e-4
    warmup: int = 100
    ema_decay: float = 0.99
    checkpoint_every: int = 100
    eval_clips: int = 100  # held-out clips judged for the card, the teacher at its defaults beside


class Distillation(nn.Module):
    """What one run holds: the student (the stage's motion UNet with the LoRA, the only trainable
    weights), the frozen teacher UNet, and the stage's appearance encoder and ControlNet, so that
    they all move to the run's device together."""

    def __init__(self, stage: ImageToVideo, teacher: nn.Module) -> None:
        super().__init__()
        self.unet, self.teacher = stage.unet, teacher
        self.appearance, self.controlnet = stage.appearance, stage.controlnet


def _batch(cache: dict[str, torch.Tensor], config: DISTILL_I2VTrainConfig, step: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
    n = config.batch_size
    idx = torch.randint(len(cache["latents"]), (n,), generator=g)
    x0 = cache["latents"][idx].float()
    return {"x0": x0, "noise": torch.randn(x0.shape, generator=g), "index": torch.randint(LCM_GRID, (n,), generator=g),
            "text": cache["hidden"][idx].float(), "empty": cache["empty_hidden"].float().expand(n, -1, -1),
            "reference": cache["firsts"][idx].float() / 255}


def _loss(model: Distillation, stage: ImageToVideo, teacher: ImageToVideo, batch: dict[str, torch.Tensor],
          guidance: float, skip: int, huber_c: float, scheduler) -> torch.Tensor:
    """`stage` predicts with the student UNet, `teacher` (the same stage on the frozen UNet) with the teacher's."""
    f = batch["x0"].shape[2]
    text, empty = batch["text"].repeat_interleave(f, 0), batch["empty"].repeat_interleave(f, 0)
    tokens = control = None
    with torch.no_grad():
        if model.appearance is not None:
            tokens = model.appearance(batch["reference"]).repeat_interleave(f, 0)
        if model.controlnet is not None:
            control = batch["reference"].repeat_interleave(f, 0)

    def student(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return stage.predict(x, t, text, tokens, control)

    def teach(x: torch.Tensor, t: torch.Tensor, conditional: bool) -> torch.Tensor:
        # the unguided branch as the stage samples it: the empty prompt, the same reference
        return teacher.predict(x, t, text if conditional else empty, tokens, control)

    return consistency_step(student, guided(teach, guidance), batch["x0"], batch["noise"], batch["index"], skip,
                            huber_c, scheduler)


def train_distill_i2v(config: DISTILL_I2VTrainConfig, out: str | Path, command: str = "",
                      progress: bool = True) -> Path:
    from magicvideo.judge.i2v import evaluate_i2v

    out = start_run(config, out)
    state = process_state()
    stage = load_i2v("tiny", config.teacher or None)
    guidance = config.guidance or stage.settings.guidance
    data = Path(config.data) if config.data else out
    if config.data and not (data / CLIPS).is_file():
        raise FileNotFoundError(f"{data} holds no cached clips ({CLIPS}): give a `magicvideo train i2v` run folder")
    s = stage.settings
    source = I2VTrainConfig(seed=config.seed, clips=config.clips, frames=s.frames, size=s.size)
    with state.local_main_process_first():
        cache = cached(data / PROMPTS, lambda: encode_captions(stage.text_encoder, config.seed, config.clips,
                                                               progress=progress))
        cache.update(cached(data / CLIPS, lambda: encode_clips(source, stage.vae, progress)))
    f = vae_factor(stage.vae)
    want = (stage.vae.config.latent_channels, s.frames, s.size // f, s.size // f)
    if tuple(cache["latents"].shape[1:]) != want:
        raise ValueError(f"{data / CLIPS} holds clips of latents {tuple(cache['latents'].shape[1:])}; the teacher "
                         f"makes {want} ({s.frames} keyframes at {s.size}x{s.size})")
    for model in (stage.appearance, stage.controlnet):
        if model is not None:
            model.eval().requires_grad_(False)
    fuse_lora(stage.unet)  # a motion LoRA into the weights, the teacher's and the student's
    teacher = copy.deepcopy(stage.unet).eval().requires_grad_(False)
    teaching = copy.copy(stage)  # the stage's predict on the frozen UNet
    teaching.unet = teacher
    stage.unet.requires_grad_(False)
    attach_lora(stage.unet, LORA_NAME, TARGETS, config.lora)
    scheduler = lcm_sampler(stage.scheduler_config)
    skip = scheduler.config.num_train_timesteps // LCM_GRID
    result = run_loop(out / "state", Distillation(stage, teacher), config, lambda step: _batch(cache, config, step),
                      lambda m, b: _loss(m, stage, teaching, b, guidance, skip, config.huber_c, scheduler),
                      "train distill-i2v", progress)
    if not state.is_main_process:
        return out / "final"
    final = out / "final"
    settings = {"sampler": "lcm", "steps": config.sample_steps, "guidance": 1.0,
                **({"lcm_timesteps": list(config.sample_timesteps)} if config.sample_timesteps else {})}
    I2VSettings.from_dict(settings)  # checked before the folder is written
    save_stage_lora(result.model.unet, final, config.teacher or TINY_I2V, settings)
    metrics: dict = {"teacher_guidance": guidance}
    if config.eval_clips:
        place = Placement(device=str(teacher.device))
        student = load_i2v("tiny", final, placement=place)  # as a user loads it, so the folder is checked
        frozen = load_i2v("tiny", config.teacher or None, placement=place)
        for name, model in (("student", student), ("teacher", frozen)):
            report = evaluate_i2v(model, config.eval_clips, progress=progress)
            metrics[name] = {k: v for k, v in report.items() if k != "per_clip"}
        metrics["eval"] = (f"{config.eval_clips} held-out clips (seed 4242), one video each at seed 0: the student at "
                           f"{config.sample_steps} LCM steps unguided, the teacher at its defaults")
    write_card(final, "Image-to-video stage (tiny), few-step LoRA (latent consistency distillation)", command, config,
               metrics, result.steps, result.seconds,
               notes=f"A LoRA over {config.teacher or 'the shipped tiny stage 2'}'s motion UNet, distilled from it at "
                     f"guidance {guidance:g}; its folder sets the LCM sampler, {config.sample_steps} steps, no "
                     "guidance.")
    print(json.dumps({k: v for k, v in metrics.items() if k != "eval"}))
    return final
