"""What stages 2 and 3 share: a motion UNet over a VAE's latents, with the text encoder, the
appearance encoder and a ControlNet, and one sampling loop (`LatentVideoStage.denoise`); the
latent noise prior that starts stage 2's sampling near its reference."""

from __future__ import annotations

import copy
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, ControlNetModel, MotionAdapter, UNet2DConditionModel, UNetMotionModel
from tqdm import tqdm

from magicvideo.device import Placement
from magicvideo.diffusion.cache import StepCache
from magicvideo.diffusion.guidance import Guided
from magicvideo.diffusion.schedule import lcm_sampler, renoise_generators, sampler
from magicvideo.diffusion.windows import windowed
from magicvideo.latent import size_multiple
from magicvideo.models.appearance import (
    AppearanceEncoder,
    appearance_processors,
    attach_appearance,
    set_appearance_scale,
)
from magicvideo.models.lora import fuse_lora
from magicvideo.models.motion_text import motion_text
from magicvideo.text import PromptEmbedding, TextEncoder, unet_text_inputs


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


def resize_reference(image: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 3, h, w) for size (h, w) or a side, antialiased bilinear (unchanged when
    already that size)."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(image.shape[-2:]) == size:
        return image
    return F.interpolate(image, size=size, mode="bilinear", antialias=True, align_corners=False)


def is_sparse(controlnet) -> bool:
    """A SparseCtrl ControlNet (diffusers' SparseControlNetModel, AnimateDiff's public ControlNet on
    RGB or sketch frames): it sees the condition of some frames, the clip at once, not its latents."""
    return type(controlnet).__name__ == "SparseControlNetModel"


def sparse_condition(controlnet, image: torch.Tensor, latent: torch.Tensor, frames: int) -> torch.Tensor:
    """SparseCtrl's input for clips conditioned on their first frame, the reference, as diffusers'
    AnimateDiffSparseControlNetPipeline builds it for `controlnet_frame_indices=[0]`: the reference
    (its scaled latent where the model's condition embedding is the simplified one, as the RGB
    model's is; else its pixels) on frame 0, zeros on the others, and the mask (1 on frame 0) as a
    last channel, (n * frames, C + 1, H, W), laid out as a per-frame ControlNet input is."""
    cond = latent if controlnet.config.use_simplified_condition_embedding else image
    out = torch.zeros(cond.shape[0], frames, cond.shape[1] + 1, *cond.shape[-2:], dtype=cond.dtype, device=cond.device)
    out[:, 0, :-1], out[:, 0, -1] = cond, 1
    return out.flatten(0, 1)


def text_only_levels(config: dict) -> list[bool]:
    """Per down level of a UNet config, whether its attention reads the text only
    (`only_cross_attention`: no self-attention over the level's cells, as the tiny 4x UNets'
    full-resolution level)."""
    only = config.get("only_cross_attention", False)
    return [bool(only)] * len(config["down_block_types"]) if isinstance(only, bool) else [bool(o) for o in only]


def motion_unet(unet: UNet2DConditionModel, adapter: MotionAdapter, load_weights: bool = True) -> UNetMotionModel:
    """diffusers' `UNetMotionModel.from_unet2d` (AnimateDiff's inflation), for any of our UNets.
    UNetMotionModel has no `only_cross_attention`: from_unet2d builds a text-only level with
    self-attention and cannot load it. Such levels get the 2D UNet's own attention modules (the
    same classes, so the motion UNet's forward runs them unchanged), and the setting is kept in
    the motion UNet's config, where `spatial_config` reads it back."""
    levels = text_only_levels(unet.config)
    if not any(levels):
        return UNetMotionModel.from_unet2d(unet, adapter, load_weights=load_weights)
    model = UNetMotionModel.from_unet2d(unet, adapter, load_weights=False)
    n = len(levels)
    for i, only in enumerate(levels):
        if only:  # the up blocks run the levels in reverse, as UNet2DConditionModel builds them
            model.down_blocks[i].attentions = copy.deepcopy(unet.down_blocks[i].attentions)
            model.up_blocks[n - 1 - i].attentions = copy.deepcopy(unet.up_blocks[n - 1 - i].attentions)
    model.register_to_config(only_cross_attention=tuple(levels))
    if load_weights:
        missing, unexpected = model.load_state_dict(unet.state_dict(), strict=False)
        wrong = unexpected or [k for k in missing if "motion_modules" not in k]
        if wrong:
            raise ValueError(f"the motion UNet does not match the UNet it inflates (e.g. {wrong[0]})")
        model.load_motion_modules(adapter)
        model.to(unet.dtype)
    return model


def controlnet_from_unet(unet: UNet2DConditionModel, **kwargs) -> ControlNetModel:
    """diffusers' `ControlNetModel.from_unet`, for any of our UNets. Its ControlNet has no
    `time_cond_proj_dim`, so from a UNet that adds the prompt's sentence vector to the timestep
    embedding (the tiny 4x UNets' `pooled_text`) it is copied without that projection: the
    ControlNet reads the prompt through its cross-attention only, and its callers pass it no
    `timestep_cond` (`text.unet_text_inputs` finds none in its config)."""
    if not unet.config.get("time_cond_proj_dim"):
        return ControlNetModel.from_unet(unet, **kwargs)
    controlnet = ControlNetModel.from_unet(unet, load_weights_from_unet=False, **kwargs)
    state = {k: v for k, v in unet.state_dict().items() if not k.startswith("time_embedding.cond_proj.")}
    missing, _ = controlnet.load_state_dict(state, strict=False)  # the UNet's up blocks have no counterpart
    wrong = [k for k in missing if not k.startswith(("controlnet_down_blocks", "controlnet_mid_block",
                                                     "controlnet_cond_embedding"))]
    if wrong:
        raise ValueError(f"the ControlNet does not match the UNet it copies (e.g. {wrong[0]})")
    return controlnet


def spatial_state(unet: UNetMotionModel) -> dict[str, torch.Tensor]:
    """The motion UNet's spatial weights under UNet2DConditionModel's names (motion modules and
    the appearance branch left out)."""
    return {k: v for k, v in unet.state_dict().items() if "motion_modules" not in k and ".processor." not in k}


def spatial_config(unet: UNetMotionModel) -> dict:
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
        "time_cond_proj_dim": c.time_cond_proj_dim, "only_cross_attention": c.get("only_cross_attention", False),
    }


class LatentVideoStage:
    """What stages 2 and 3 share: a motion UNet over the VAE's latents, the text encoder, the
    appearance encoder and a ControlNet, and one sampling loop (`denoise`)."""

    def __init__(self, unet: UNetMotionModel, vae: AutoencoderKL, text_encoder: TextEncoder,
                 appearance: AppearanceEncoder | None = None, controlnet: ControlNetModel | None = None,
                 settings=None, spatial_config: dict | None = None, scheduler_config: dict | None = None) -> None:
        self.unet, self.vae, self.text_encoder = unet.eval(), vae.eval(), text_encoder
        self.spatial_config = dict(spatial_config or spatial_config(unet))
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
        """Move the stage to `placement`'s device and dtype and apply its memory controls. A LoRA
        the UNet still carries as peft layers (a motion LoRA) is fused into its weights: the same
        frames (to 1e-5), 11% less time a step on the tiny stage (CPU); a stage saved after this
        writes its motion modules whole."""
        fuse_lora(self.unet)
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

    def context(self, length: int, stride: int, frames: int) -> tuple[int, int]:
        """The context window (length, stride) for a clip of `frames`: length 0 is the motion
        modules' own; a stride longer than the window would leave frames out."""
        length = length or self.unet.config.motion_max_seq_length
        if frames > length and stride > length:
            raise ValueError(f"context stride {stride} is longer than the context length {length}: frames "
                             "between windows would be left out")
        return length, stride

    def encode_prompt(self, prompt: str | list[str]) -> PromptEmbedding:
        with self.on_device(self.text_encoder.model):
            return self.text_encoder(prompt).to("cpu")

    def spatial_unet(self) -> UNet2DConditionModel:
        """A copy of the spatial UNet as a UNet2DConditionModel (no motion modules, no image branch)."""
        spatial = UNet2DConditionModel.from_config(self.spatial_config)
        spatial.load_state_dict(spatial_state(self.unet), strict=True)
        return spatial

    def size_multiple(self) -> int:
        """Frame sides must be multiples of this: the VAE's factor times the UNet's downsampling."""
        return size_multiple(self.spatial_config, self.vae)

    def check_frame(self, height: int, width: int) -> None:
        """Refuse frame sides that are not multiples of `size_multiple`, in one line."""
        m = self.size_multiple()
        for name, side in (("height", height), ("width", width)):
            if side % m:
                raise ValueError(f"{name if height != width else 'size'} must be a multiple of {m} for this UNet, "
                                 f"got {side}")

    def encode_reference(self, image: torch.Tensor, size: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference at the frames' size (B, 3, h, w) and its scaled latent."""
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
        if control is not None and self.controlnet is not None and is_sparse(self.controlnet):
            clip = control.reshape(n, f, *control.shape[1:]).transpose(1, 2)  # (n, C + 1, f, H, W): sparse_condition's
            down, mid = self.controlnet(x, t, encoder_hidden_states=text, controlnet_cond=clip[:, :-1],
                                        conditioning_mask=clip[:, -1:], return_dict=False)
        elif control is not None and self.controlnet is not None:
            flat = x.permute(0, 2, 1, 3, 4).reshape(n * f, -1, h, w)
            t_frames = t.repeat_interleave(f) if t.ndim else t
            down, mid = self.controlnet(flat, t_frames, encoder_hidden_states=text, controlnet_cond=control,
                                        return_dict=False)
        if control is not None and self.controlnet is not None:
            if control_scale != 1.0:
                down, mid = [r * control_scale for r in down], mid * control_scale
            residuals = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
        states = (text, [tokens]) if tokens is not None else text
        pooled = unet_text_inputs(self.unet, text, f)  # one sentence vector per clip
        return self.unet(x, t, encoder_hidden_states=states, **pooled, **residuals).sample.float()

    def denoise(self, cond: PromptEmbedding, image: torch.Tensor, noise: torch.Tensor, steps: int, guidance: float,
                appearance_scale: float, control: torch.Tensor | None, start: torch.Tensor | None = None,
                strength: float = 1.0, progress: bool = False, desc: str = "denoise",
                negative: PromptEmbedding | None = None, contrast: PromptEmbedding | None = None,
                contrast_scale: float = 0.0, control_scale: float = 1.0, context_length: int = 0,
                context_stride: int = 4, cache_interval: int = 1, sampler_name: str = "dpm++",
                seeds: list[int] | None = None, timesteps: list[int] | None = None) -> torch.Tensor:
        """The sampling loop (DPM-Solver++, classifier-free guidance when guidance > 1) on video
        latents shaped like `noise` (n, 4, F, h, w), from `noise` itself; or, given clean latents
        `start`, only the last `strength` of the schedule, from `start` noised to that level (SDEdit,
        as diffusers' img2img). image: (n, 3, H, W) references for the appearance encoder; control:
        (n*F, C, H', W') per-frame ControlNet input, or None. negative: what guidance steers away
        from (one per clip; default the empty prompt). `cond` may hold one embedding per frame of
        each clip (n * F rows, prompt travel) instead of one per clip. contrast, contrast_scale: a third branch,
        `pred += contrast_scale * (pred_cond - pred_contrast)`, which amplifies only what the prompt
        says beyond `contrast` (its motion, where contrast is its still version). control_scale: what
        the ControlNet's residuals are multiplied by. context_length, context_stride: clips longer
        than context_length frames (0: the motion modules' own length) are predicted in windows of it,
        `context_stride` apart, blended (diffusion.windows); shorter clips are one window.
        cache_interval: above 1, only every cache_interval-th step computes the UNet's deep levels
        and the others reuse them (diffusion.cache). sampler_name "lcm": diffusers' LCMScheduler, for a
        consistency-distilled UNet (`magicvideo train distill-i2v`); it re-noises between steps, from
        one generator per clip seeded from `seeds` (so a clip's frames do not depend on its batch), at
        `timesteps` if given (then `steps` is their count)."""
        n, frames = noise.shape[0], noise.shape[2]
        lcm = sampler_name == "lcm"
        scheduler = lcm_sampler(self.scheduler_config) if lcm else sampler(self.scheduler_config)
        renoise = {"generator": renoise_generators(seeds or [0] * n)} if lcm else {}
        if timesteps is not None:
            scheduler.set_timesteps(device=self.device, timesteps=list(timesteps))
        else:
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
        length, context_stride = self.context(context_length, context_stride, frames)

        def predict(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return windowed(lambda x, **rows: self._predict(x, t, **rows, control_scale=control_scale), x,
                            {"text": text, "tokens": tokens, "control": control}, length, context_stride)

        guide = Guided(predict, guidance, contrast_scale if contrast is not None else 0.0)
        if guide.branches > 1 and negative is None:
            with self.on_device(self.text_encoder.model):
                negative = self.text_encoder.empty(n)
        k = guide.branches  # the inputs below are laid out branch-major, n clips each
        branches = {1: [cond], 2: [negative, cond], 3: [negative, contrast, cond]}[k]
        def per_frame(e: PromptEmbedding) -> torch.Tensor:  # a clip's prompt on each of its frames, or already so
            return e.hidden if len(e) == n * frames else e.repeat(frames).hidden

        text = torch.cat([per_frame(b.to("cpu")) for b in branches]).to(self.device)
        tokens = None
        if self.appearance is not None:
            set_appearance_scale(self.unet, appearance_scale)
            if appearance_scale > 0:
                with self.on_device(self.appearance):
                    tokens = self.appearance(image.to(self.device, next(self.appearance.parameters()).dtype))
                    # the unguided branch: a CLIP encoder's zero embedding (as diffusers gives IP-Adapter's
                    # negative branch); our own CNN encoder was trained with the image in every branch
                    unguided = (self.appearance.unconditional(n) if k > 1 and hasattr(self.appearance, "unconditional")
                                else tokens)
                tokens = torch.cat([unguided] + [tokens] * (k - 1)).repeat_interleave(frames, 0)
            else:
                tokens = torch.zeros(n * k * frames, self.appearance.num_tokens,
                                     self.text_encoder.dim, device=self.device)
        if control is not None:
            control = torch.cat([control] * k).to(self.device)
        with (self.on_device(self.unet, self.controlnet), motion_text(self.unet, text[::frames]),
              StepCache(self.unet, self.controlnet, cache_interval) as cache):
            for i, t in enumerate(tqdm(timesteps, desc=desc, disable=not progress)):
                cache.step(i)
                x = scheduler.scale_model_input(latents, t)
                latents = scheduler.step(guide(x, t), t, latents, **renoise).prev_sample
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
