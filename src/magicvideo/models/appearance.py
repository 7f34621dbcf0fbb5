"""The appearance encoder: the reference image as embedding tokens, read by the UNet through a
cross-attention of their own beside the text cross-attention (decoupled, as IP-Adapter).

- `AppearanceEncoder` (tiny preset): a small CNN, reference RGB -> grid x grid tokens.
- `CLIPAppearanceEncoder` (full size): a CLIP image encoder's embedding through an
  `AppearanceProjection` to a few tokens, IP-Adapter's recipe (image_encoder/ + appearance/),
  or its penultimate hidden states through an `AppearanceResampler`, IP-Adapter Plus's.
- `attach_appearance` swaps every spatial cross-attention processor of a diffusers UNet (2D or
  motion, any layout: ours or SD1.5's) for diffusers' `IPAdapterAttnProcessor2_0`, whose
  image keys/values start as copies of the text ones. The UNet is then called with
  `encoder_hidden_states=(text_states, [image_tokens])`; `set_appearance_scale(unet, 0)` gives
  exactly the UNet without the image branch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention_processor import AttnProcessor2_0, IPAdapterAttnProcessor2_0
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


class AppearanceEncoder(ModelMixin, ConfigMixin):
    """(B, 3, H, W) in [0, 1] -> (B, grid * grid, dim) tokens. Any input size is resized to
    `image_size` first, so the tokens mean the same at every stage's resolution."""

    @register_to_config
    def __init__(self, image_size: int = 128, widths: tuple[int, ...] = (32, 64, 128, 256), grid: int = 4,
                 dim: int = 384) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = 3
        for width in widths:
            layers += [nn.Conv2d(prev, width, 3, stride=2, padding=1), nn.GroupNorm(8, width), nn.SiLU()]
            prev = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.position = nn.Parameter(torch.zeros(grid * grid, prev))
        self.proj = nn.Linear(prev, dim)
        self.norm = nn.LayerNorm(dim)

    @property
    def num_tokens(self) -> int:
        return self.config.grid**2

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        size = self.config.image_size
        if images.shape[-2:] != (size, size):
            # in fp32: the CPU has no bf16 antialiased resize
            images = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True,
                                   align_corners=False).to(images.dtype)
        x = self.pool(self.features(images * 2 - 1)).flatten(2).transpose(1, 2)  # (B, grid^2, C)
        return self.norm(self.proj(x + self.position))


BRANCH_FILE = "branch.safetensors"  # beside appearance/: the image keys/values of every spatial cross-attention

# CLIPImageProcessor's normalisation, the statistics CLIP image encoders were trained with.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class AppearanceProjection(ModelMixin, ConfigMixin):
    """An image encoder's pooled embedding (B, embed_dim) -> (B, num_tokens, dim) tokens."""

    @register_to_config
    def __init__(self, embed_dim: int = 768, num_tokens: int = 4, dim: int = 768) -> None:
        super().__init__()
        self.proj = nn.Linear(embed_dim, num_tokens * dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        c = self.config
        return self.norm(self.proj(embeds).reshape(-1, c.num_tokens, c.dim))


class AppearanceResampler(ModelMixin, ConfigMixin):
    """IP-Adapter Plus's image projection: an image encoder's penultimate hidden states
    (B, L, embed_dim) -> (B, num_tokens, dim) through a Perceiver-style resampler, diffusers'
    IPAdapterPlusImageProjection (learned queries attending to the patches, `depth` times)."""

    @register_to_config
    def __init__(self, embed_dim: int = 1280, num_tokens: int = 16, dim: int = 768, hidden_dim: int = 768,
                 heads: int = 12, depth: int = 4, ffn_ratio: float = 4.0) -> None:
        super().__init__()
        from diffusers.models.embeddings import IPAdapterPlusImageProjection

        self.resampler = IPAdapterPlusImageProjection(embed_dims=embed_dim, output_dims=dim, hidden_dims=hidden_dim,
                                                      depth=depth, dim_head=64, heads=heads, num_queries=num_tokens,
                                                      ffn_ratio=ffn_ratio)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.resampler(hidden_states)


class CLIPAppearanceEncoder(nn.Module):
    """(B, 3, H, W) in [0, 1] -> (B, num_tokens, dim): a CLIP vision model with projection
    (`image_embeds`), then `AppearanceProjection`, IP-Adapter's recipe; with an
    `AppearanceResampler`, the encoder's penultimate hidden states through it, IP-Adapter Plus's
    (both as diffusers' IP-Adapter pipelines feed them). Images go through
    transformers' CLIPImageProcessor, as diffusers' IP-Adapter pipelines feed them (8-bit RGB,
    shortest side to the encoder's size, bicubic, centre crop, CLIP's normalisation), so a
    public adapter sees what it was trained on; a non-square reference is cropped, not squashed.
    `unconditional(n)`: the tokens of a zero embedding (Plus: of a zero image's hidden states),
    what the unguided branch reads, as diffusers gives IP-Adapter's negative branch."""

    def __init__(self, image_encoder: nn.Module, projection: AppearanceProjection | AppearanceResampler) -> None:
        super().__init__()
        self.image_encoder, self.projection = image_encoder, projection
        try:  # the PIL backend (no torchvision needed), under the name transformers now gives it
            from transformers import CLIPImageProcessorPil as Processor
        except ImportError:
            from transformers import CLIPImageProcessor as Processor
        size = image_encoder.config.image_size
        self.processor = Processor(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                                   image_mean=CLIP_MEAN, image_std=CLIP_STD)

    @property
    def num_tokens(self) -> int:
        return self.projection.config.num_tokens

    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> the encoder's (B, 3, S, S) input, by CLIPImageProcessor."""
        rgb = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        return self.processor(images=list(rgb), return_tensors="pt").pixel_values

    @property
    def plus(self) -> bool:
        return isinstance(self.projection, AppearanceResampler)

    def _project(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self.image_encoder(pixel_values=pixels, output_hidden_states=self.plus)
        features = out.hidden_states[-2] if self.plus else out.image_embeds
        return self.projection(features.to(self.projection.dtype))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self._project(self.pixels(images).to(images.device, self.image_encoder.dtype))

    def unconditional(self, n: int) -> torch.Tensor:
        """(n, num_tokens, dim): the projection of a zero image embedding (Plus: of the hidden
        states of an all-zero encoder input, as diffusers makes its negative)."""
        p = next(self.projection.parameters())
        if self.plus:
            size = self.image_encoder.config.image_size
            return self._project(torch.zeros(n, 3, size, size, device=p.device, dtype=self.image_encoder.dtype))
        return self.projection(torch.zeros(n, self.projection.config.embed_dim, device=p.device, dtype=p.dtype))


def _is_spatial_cross_attention(unet: nn.Module, name: str) -> bool:
    """A spatial attention that reads the text: every block's attn2, and attn1 too at a text-only
    level (`only_cross_attention`), where it is handed the text (and so the image tokens) as well."""
    if "motion_modules" in name:
        return False
    return name.endswith("attn2.processor") or (
        name.endswith("attn1.processor") and unet.get_submodule(name.removesuffix(".processor")).is_cross_attention)


def attach_appearance(unet: nn.Module, num_tokens: int, scale: float = 1.0) -> nn.ModuleList:
    """Give every spatial cross-attention of `unet` an image branch of `num_tokens` tokens.
    Returns the new processors (the trainable parameters of the branch)."""
    processors, added = {}, []
    for name, processor in unet.attn_processors.items():
        if not _is_spatial_cross_attention(unet, name):
            processors[name] = processor
            continue
        attn = unet.get_submodule(name.removesuffix(".processor"))
        ip = IPAdapterAttnProcessor2_0(attn.inner_dim, attn.cross_attention_dim, num_tokens=(num_tokens,), scale=scale)
        # Start the image keys/values as the text ones: the branch begins reading image tokens
        # the way the trained UNet reads text, not from noise.
        ip.to_k_ip[0].weight.data.copy_(attn.to_k.weight.data)
        ip.to_v_ip[0].weight.data.copy_(attn.to_v.weight.data)
        ip.to(device=attn.to_k.weight.device, dtype=attn.to_k.weight.dtype)
        processors[name] = ip
        added.append(ip)
    if not added:
        raise ValueError("this UNet has no cross-attention to attach the appearance branch to")
    unet.set_attn_processor(processors)
    return nn.ModuleList(added)


def appearance_processors(unet: nn.Module) -> nn.ModuleList:
    """The image-branch processors of a UNet, in a fixed order (for saving and loading)."""
    return nn.ModuleList(p for name, p in sorted(unet.attn_processors.items())
                         if isinstance(p, IPAdapterAttnProcessor2_0))


def set_appearance_scale(unet: nn.Module, scale: float) -> None:
    """Weight of the image branch against the text (0: no image branch at all)."""
    processors = appearance_processors(unet)
    if not processors:
        raise ValueError("this UNet has no appearance branch; call attach_appearance first")
    for p in processors:
        p.scale = [float(scale)]


def detach_appearance(unet: nn.Module) -> None:
    """Back to plain attention everywhere the image branch was."""
    unet.set_attn_processor({name: AttnProcessor2_0() if isinstance(p, IPAdapterAttnProcessor2_0) else p
                             for name, p in unet.attn_processors.items()})
