"""Stage 1, text-to-image: a prompt becomes the reference image the video stages animate.

- `TextToImage`: our latent diffusion stage (UNet2DConditionModel + AutoencoderKL + a text
  encoder), the `tiny` preset's, sampled with DPM-Solver++ and classifier-free guidance.
- `DiffusersTextToImage`: any diffusers text-to-image pipeline from a local folder (SD1.5,
  SDXL, ...): the paper's stage 1 "works with any T2I model"; nothing is downloaded.
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from magicvideo.device import Placement
from magicvideo.diffusion.cache import StepCache
from magicvideo.diffusion.guidance import Guided
from magicvideo.diffusion.schedule import initial_noise, lcm_sampler, renoise_generators, sampler, seed_list
from magicvideo.formats import LoraFile, fuse_loras, lora_host
from magicvideo.latent import check_size, vae_factor
from magicvideo.models.lora import fuse_lora, load_lora, save_lora, without_lora
from magicvideo.settings import T2ISettings, frame_size
from magicvideo.stages.parts import STAGE_FILE, named_part, part_name, variant
from magicvideo.text import MiniLMTextEncoder, PromptEmbedding, TextEncoder, unet_text_inputs

LORA_FILE, LORA_NAME = "lora.safetensors", "t2i_lora"
VECTORS_FILE = "vectors.safetensors"  # beside a LoRA: the UNet's biases and norm weights, carried whole
# what a stage-1 LoRA updates: every attention, feed-forward and transformer projection, and the
# resnets' convolutions (where the shapes are drawn)
LORA_TARGETS = (r".*((attn1|attn2)\.(to_q|to_k|to_v|to_out\.0)|ff\.net\.(0\.proj|2)|proj_in|proj_out"
                r"|resnets\.\d+\.(conv1|conv2))")
# what a LoRA taken from a full fine-tune updates: every matrix of the UNet (its biases and norms
# travel whole, in VECTORS_FILE). Measured on the GPU fine-tune (benchmarks/results/t2i_distill.md),
# LORA_TARGETS alone left the rank-16 copy's predictions further from the fine-tune's than the base's.
EXTRACT_TARGETS = (r".*(to_q|to_k|to_v|to_out\.0|ff\.net\.(0\.proj|2)|proj_in|proj_out|conv1|conv2|conv_shortcut"
                   r"|time_emb_proj|downsamplers\.0\.conv|upsamplers\.0\.conv|conv_in|conv_out|linear_1|linear_2)")
@dataclass
class T2IOutput:
    images: torch.Tensor  # (B, 3, H, W) float32 in [0, 1]
    flagged: tuple[bool, ...] = ()  # a diffusers pipeline's safety checker, when on: which images it blacked out


class TextToImage:
    """Our stage 1. `stage("a red circle over a meadow", seed=0).images` -> (1, 3, 128, 128)."""

    def __init__(self, unet: UNet2DConditionModel, vae: AutoencoderKL, text_encoder: TextEncoder,
                 settings: T2ISettings | None = None) -> None:
        if unet.config.cross_attention_dim != text_encoder.dim:
            raise ValueError(f"the UNet reads {unet.config.cross_attention_dim}-d text states but the text "
                             f"encoder gives {text_encoder.dim}-d")
        self.unet, self.vae, self.text_encoder = unet.eval(), vae.eval(), text_encoder
        self.settings = settings or T2ISettings()

    @property
    def device(self) -> torch.device:
        return self.unet.device

    def place(self, placement: Placement) -> TextToImage:
        """Move the stage to `placement`'s device. The tiny stage computes in fp32 whatever the
        placement's dtype (its weights are 10 MB; its sampler's arithmetic is fp32 anyway)."""
        self.unet.to(placement.device)
        self.vae.to(placement.device)
        self.text_encoder.to(placement.device)
        return self

    # ------------------------------------------------------------------ files
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, unet: str | os.PathLike | None = None,
                        vae: str | os.PathLike | None = None, loras: Sequence[LoraFile] = ()) -> TextToImage:
        """From a folder written by `save_pretrained` (its stage.json may name the UNet and VAE,
        relative to itself), or a LoRA folder (`lora.safetensors`, as `magicvideo train t2i` writes
        with `lora: R`) applied over the UNet and VAE its config.json names. `unet`, `vae`: the
        components for a folder that neither holds nor names its own. A LoRA is fused into the UNet's weights, so
        it costs nothing at sampling time; so are `loras` (public or diffusers-format files, magicvideo.formats),
        after it."""
        path = Path(path)
        lora, settings = None, {}
        if (path / STAGE_FILE).is_file():
            settings = json.loads((path / STAGE_FILE).read_text())
            named = {k: settings.pop(k, None) for k in ("unet", "vae")}
        elif (path / LORA_FILE).is_file():
            over = json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else {}
            if over.get("stage"):  # a LoRA over a whole stage-1 folder (itself possibly a LoRA): that stage first
                stage = cls.from_pretrained(named_part(path, over["stage"], path), unet=unet, vae=vae)
                _apply_lora(stage.unet, path / LORA_FILE)
                fuse_loras(lora_host(stage.unet), loras)
                # the LoRA's own sampling settings (a few-step one's sampler and steps) over the stage's
                stage.settings = T2ISettings.from_dict(vars(stage.settings) | over.get("settings", {}))
                return stage
            named, lora = {"unet": over.get("base"), "vae": over.get("vae")}, path / LORA_FILE
        else:
            raise FileNotFoundError(f"{path} is not a saved text-to-image stage (no {STAGE_FILE}) "
                                    f"nor a stage-1 LoRA (no {LORA_FILE})")
        given = {"unet": unet, "vae": vae}
        # its own component, else the one it names, else the one given, as stage 2's folders do
        unet_dir, vae_dir = (path / k if (path / k / "config.json").is_file()
                             else named_part(path, named[k], Path(given[k]) if given[k] else path / k)
                             for k in ("unet", "vae"))
        for folder in (unet_dir, vae_dir):
            for name in ("config.json", "diffusion_pytorch_model.safetensors"):
                if not (folder / name).is_file():
                    raise FileNotFoundError(f"missing weight file {folder / name}")
        text = MiniLMTextEncoder.from_pretrained(max_tokens=settings.pop("max_tokens", 40))
        # shipped weights are stored as fp16 (half the repository size); we compute in fp32
        model = UNet2DConditionModel.from_pretrained(unet_dir, use_safetensors=True, torch_dtype=torch.float32)
        if lora is not None:
            _apply_lora(model, lora)
        fuse_loras(lora_host(model), loras)
        autoencoder = AutoencoderKL.from_pretrained(vae_dir, use_safetensors=True, torch_dtype=torch.float32)
        return cls(model, autoencoder, text, T2ISettings.from_dict(settings))

    def save_pretrained(self, path: str | os.PathLike) -> None:
        path = Path(path)
        self.unet.save_pretrained(path / "unet")
        self.vae.save_pretrained(path / "vae")
        settings = dict(vars(self.settings), max_tokens=self.text_encoder.max_tokens)
        (path / STAGE_FILE).write_text(json.dumps(settings, indent=2) + "\n")

    # ------------------------------------------------------------------ sampling
    def encode_prompt(self, prompt: str | list[str]) -> PromptEmbedding:
        return self.text_encoder(prompt)

    @torch.no_grad()
    def __call__(self, prompt: str | list[str] | PromptEmbedding, seed: int | list[int] = 0,
                 steps: int | None = None, guidance: float | None = None, size: int | None = None,
                 width: int | None = None, height: int | None = None, progress: bool = False,
                 cache_interval: int | None = None) -> T2IOutput:
        """Images for one prompt or a batch (or an embedding from `encode_prompt`), `size` square or
        `height` x `width`. guidance <= 1 samples without classifier-free guidance (one UNet pass
        per step)."""
        # 1. Settings: the call's, else the stage's; checked before any work
        s = self.settings.merged(steps=steps, guidance=guidance, size=size, width=width, height=height,
                                 cache_interval=cache_interval)
        steps, guidance, (height, width) = s.steps, s.guidance, frame_size(s)
        check_size(height, width, vae_factor(self.vae))  # diffusers' UNet takes any latent size
        # 2. The prompt, encoded once; the empty prompt beside it for guidance
        cond = prompt if isinstance(prompt, PromptEmbedding) else self.encode_prompt(prompt)
        n = len(cond)
        seeds = seed_list(seed, n)
        context = PromptEmbedding.cat([self.text_encoder.empty(n), cond]) if guidance > 1.0 else cond
        context = context.to(self.device)
        # 3. Seeded noise on the VAE's latent grid
        f = vae_factor(self.vae)
        latents = initial_noise(seeds, (self.unet.config.in_channels, height // f, width // f)).to(self.device)
        # 4. Denoise: DPM-Solver++ steps on the guided prediction
        text = {"encoder_hidden_states": context.hidden, **unet_text_inputs(self.unet, context.hidden)}
        guide = Guided(lambda x, t: self.unet(x, t, **text).sample, guidance)
        scheduler = lcm_sampler() if s.sampler == "lcm" else sampler()
        scheduler.set_timesteps(steps)
        latents = latents * scheduler.init_noise_sigma
        # LCM re-noises between its steps: from each item's own generator, as its initial noise
        noise = {"generator": renoise_generators(seeds)} if s.sampler == "lcm" else {}
        with StepCache(self.unet, None, s.cache_interval) as cache:
            for i, t in enumerate(tqdm(scheduler.timesteps, desc="text-to-image", disable=not progress)):
                cache.step(i)
                x = scheduler.scale_model_input(latents, t)
                latents = scheduler.step(guide(x, t), t, latents, **noise).prev_sample
        # 5. Decode to pixels in [0, 1]
        images = self.vae.decode(latents / self.vae.config.scaling_factor).sample
        return T2IOutput(((images + 1) / 2).clamp(0, 1).float().cpu())


def _apply_lora(unet: UNet2DConditionModel, lora: Path) -> None:
    """Fuse a stage-1 LoRA file into the UNet (and set the biases and norms saved beside it)."""
    load_lora(unet, LORA_NAME, lora)
    fuse_lora(unet)
    if (lora.parent / VECTORS_FILE).is_file():
        load_vectors(unet, lora.parent / VECTORS_FILE)


def vectors_of(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The one-dimensional entries of a UNet state dict (biases, norm weights), under their plain
    names: a few ten-thousand numbers that a LoRA, being matrices, cannot carry."""
    return {k: v for k, v in without_lora(state).items() if v.dim() < 2}


def load_vectors(unet: UNet2DConditionModel, path: str | os.PathLike) -> None:
    """Set the UNet's biases and norm weights from a VECTORS_FILE (after its LoRA is fused)."""
    vectors = load_file(path)
    own = vectors_of(unet.state_dict())
    wrong = sorted(k for k, v in vectors.items() if k not in own or own[k].shape != v.shape)
    if wrong:
        raise ValueError(f"{path} does not match this UNet ({len(wrong)} entries, e.g. {wrong[0]!r})")
    dtype = next(unet.parameters()).dtype
    unet.load_state_dict({k: v.to(dtype) for k, v in vectors.items()}, strict=False)


def save_t2i_lora(unet: UNet2DConditionModel, folder: str | os.PathLike, base: str | None = None,
                  vae: str | None = None, vectors: bool = False, stage: str | None = None,
                  settings: dict | None = None) -> Path:
    """Write the UNet's stage-1 LoRA as a folder `TextToImage.from_pretrained` (and `magicvideo t2i
    --weights`) applies: lora.safetensors (fp16) and config.json naming the UNet and VAE it goes
    over (null: the shipped ones), or with `stage` the whole stage-1 folder it goes over; with
    `vectors`, the UNet's biases and norms too (VECTORS_FILE); with `settings` (over a `stage`),
    the sampling settings it loads with (T2ISettings' fields, e.g. a few-step sampler's)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_lora(unet, LORA_NAME, folder / LORA_FILE, dtype=torch.float16)
    if vectors:
        save_file({k: v.detach().half().contiguous() for k, v in vectors_of(unet.state_dict()).items()},
                  folder / VECTORS_FILE)
    config = unet.peft_config[LORA_NAME]
    over = {"base": base, "vae": vae, **({"stage": part_name(folder, stage)} if stage else {}),
            **({"settings": settings} if settings else {}),
            "rank": config.r, "alpha": config.lora_alpha, "targets": config.target_modules,
            "vectors": vectors}
    (folder / "config.json").write_text(json.dumps(over, indent=2) + "\n")
    return folder


class DiffusersTextToImage:
    """Any diffusers text-to-image pipeline saved in a local folder, as stage 1."""

    def __init__(self, pipeline, settings: T2ISettings | None = None) -> None:
        self.pipeline = pipeline
        default = getattr(pipeline, "default_sample_size", None) or pipeline.unet.config.sample_size
        # SD1.5's own defaults: its native size, 30 steps, guidance 7.5
        self.settings = settings or T2ISettings(size=default * pipeline.vae_scale_factor, steps=30, guidance=7.5)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, torch_dtype: torch.dtype | None = None,
                        loras: Sequence[LoraFile] = (), safety_checker: bool = False,
                        **overrides) -> DiffusersTextToImage:
        """From a local pipeline folder; `loras` are fused into its UNet and text encoder
        (magicvideo.formats); `overrides` (size, steps, guidance) change its defaults. A folder's
        safety checker is left out unless `safety_checker`; when it runs, the images it blacks out
        are named in the output's `flagged`, not only blacked."""
        from diffusers import DiffusionPipeline

        path = Path(path)
        if not (path / "model_index.json").is_file():
            raise FileNotFoundError(f"{path} is not a diffusers pipeline folder (no model_index.json)")
        index = json.loads((path / "model_index.json").read_text())
        off = {"safety_checker": None, "requires_safety_checker": False} if (
            index.get("safety_checker") and not safety_checker) else {}
        pipeline = DiffusionPipeline.from_pretrained(path, local_files_only=True, use_safetensors=True,
                                                     dtype=torch_dtype or torch.float32, **off,
                                                     **variant(path / "unet"))  # a folder of fp16 files only
        pipeline.set_progress_bar_config(disable=True)
        fuse_loras(pipeline, loras)
        stage = cls(pipeline)
        stage.settings = stage.settings.merged(**overrides)
        return stage

    def place(self, placement: Placement) -> DiffusersTextToImage:
        """Device and dtype; with `placement.offload`, diffusers' model CPU offload."""
        if self.pipeline.dtype != placement.torch_dtype:
            self.pipeline.to(dtype=placement.torch_dtype)
        if placement.offload:
            self.pipeline.enable_model_cpu_offload(device=placement.device)
        else:
            self.pipeline.to(placement.device)
        if placement.vae_tiling:
            self.pipeline.vae.enable_tiling()
        return self

    def save_pretrained(self, path: str | os.PathLike) -> None:
        self.pipeline.save_pretrained(path)

    def __call__(self, prompt: str | list[str], seed: int | list[int] = 0, steps: int | None = None,
                 guidance: float | None = None, size: int | None = None, width: int | None = None,
                 height: int | None = None, progress: bool = False, cache_interval: int | None = None) -> T2IOutput:
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if any(not p.strip() for p in prompts):
            from magicvideo.errors import PromptError

            raise PromptError("the prompt is empty")
        s = self.settings.merged(steps=steps, guidance=guidance, size=size, width=width, height=height,
                                 cache_interval=cache_interval)
        height, width = frame_size(s)
        check_size(height, width, self.pipeline.vae_scale_factor)
        generators = [torch.Generator().manual_seed(g) for g in seed_list(seed, len(prompts))]
        self.pipeline.set_progress_bar_config(disable=not progress)

        def next_step(pipe, i: int, t, kwargs: dict) -> dict:  # diffusers calls it after each step
            cache.step(i + 1)
            return {}

        steps, unet = {}, getattr(self.pipeline, "unet", None)  # a transformer pipeline has none: nothing kept
        if s.cache_interval > 1:  # a UNet's levels, and the pipeline must say when a step ends
            if unet is None or "callback_on_step_end" not in inspect.signature(self.pipeline.__call__).parameters:
                raise ValueError(f"{type(self.pipeline).__name__} has no UNet or does not report its steps "
                                 "(callback_on_step_end): leave the cache interval at 1")
            steps["callback_on_step_end"] = next_step
        with StepCache(unet, None, s.cache_interval) as cache:
            cache.step(0)
            result = self.pipeline(prompts, num_inference_steps=s.steps, guidance_scale=s.guidance,
                                   height=height, width=width, generator=generators, output_type="pt", **steps)
        flagged = tuple(bool(f) for f in (getattr(result, "nsfw_content_detected", None) or ()))
        return T2IOutput(result.images.float().cpu(), flagged)
