"""Motion text attention: the caption read inside the motion modules, beside their attention over time.

AnimateDiff's motion modules attend over frames only; a caption reaches them only through the
spatial UNet's text cross-attention. Where that UNet was trained on still images (our stage 1,
and any T2I model), its features carry little of a caption's motion words ("moves left"), and
the I2V stage learns motion it cannot steer: its videos settle on the average of the motions the
caption did not pick, an object that stays still.

`MotionTextAttnProcessor` replaces the processor of each motion module's first temporal
attention. Its queries are the frame tokens after the motion module's sinusoidal frame-position
embedding, so what it reads from the caption can differ frame by frame:

    out = to_out( Attn(q, k, v) + scale * Attn(q, W_k c, W_v c) )

q, k, v the temporal self-attention's own, c the caption's token states (the UNet's
`encoder_hidden_states`, one row per clip). W_v starts at zero, so attaching the branch leaves
a trained motion module exactly as it was (decoupled keys and values as in IP-Adapter; the
caption tokens instead of image tokens, and over time instead of space).

The motion modules are called without the caption, so it travels beside the call:
`with motion_text(unet, text): unet(...)`.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from torch import nn


class MotionTextAttnProcessor(nn.Module):
    """Temporal self-attention plus a cross-attention from the frames to the caption's tokens."""

    def __init__(self, inner_dim: int, text_dim: int, scale: float = 1.0) -> None:
        super().__init__()
        self.to_k_text = nn.Linear(text_dim, inner_dim, bias=False)
        self.to_v_text = nn.Linear(text_dim, inner_dim, bias=False)
        nn.init.zeros_(self.to_v_text.weight)
        self.scale = scale
        self.text: torch.Tensor | None = None  # (clips, tokens, text_dim), set by `motion_text`

    def __call__(self, attn: Attention, hidden_states: torch.Tensor,
                 encoder_hidden_states: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        # hidden_states: (clips * h * w, frames, C), clip-major (AnimateDiffTransformer3D's layout).
        rows, frames, _ = hidden_states.shape
        heads = attn.heads

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(x.shape[0], x.shape[1], heads, -1).transpose(1, 2)

        query = split(attn.to_q(hidden_states))
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        out = F.scaled_dot_product_attention(query, split(attn.to_k(context)), split(attn.to_v(context)))
        if self.text is not None and self.scale != 0:
            if rows % self.text.shape[0]:
                raise ValueError(f"motion text for {self.text.shape[0]} clips does not divide {rows} frame rows")
            text = self.text.to(hidden_states.dtype)
            # project once per clip, then share among the clip's h * w positions
            per_clip = rows // text.shape[0]
            key = split(self.to_k_text(text)).repeat_interleave(per_clip, 0)
            value = split(self.to_v_text(text)).repeat_interleave(per_clip, 0)
            out = out + self.scale * F.scaled_dot_product_attention(query, key, value)
        out = out.transpose(1, 2).reshape(rows, frames, -1).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


def _is_first_temporal_attention(name: str) -> bool:
    return "motion_modules" in name and name.endswith("attn1.processor")


def attach_motion_text(unet: nn.Module, text_dim: int, scale: float = 1.0) -> nn.ModuleList:
    """Give each motion module's first temporal attention a caption branch (a no-op until trained).
    Returns the new processors (the branch's parameters)."""
    processors, added = {}, []
    for name, processor in unet.attn_processors.items():
        if not _is_first_temporal_attention(name):
            processors[name] = processor
            continue
        attn = unet.get_submodule(name.removesuffix(".processor"))
        branch = MotionTextAttnProcessor(attn.inner_dim, text_dim, scale)
        branch.to(device=attn.to_q.weight.device, dtype=attn.to_q.weight.dtype)
        processors[name] = branch
        added.append(branch)
    if not added:
        raise ValueError("this UNet has no motion modules to attach motion text attention to")
    unet.set_attn_processor(processors)
    return nn.ModuleList(added)


def motion_text_processors(unet: nn.Module) -> nn.ModuleList:
    """The caption-branch processors of a motion UNet, in a fixed order (empty: none attached)."""
    return nn.ModuleList(p for _, p in sorted(unet.attn_processors.items())
                         if isinstance(p, MotionTextAttnProcessor))


def set_motion_text_scale(unet: nn.Module, scale: float) -> None:
    """Weight of the caption branch (0: the motion modules exactly as without it)."""
    processors = motion_text_processors(unet)
    if not processors:
        raise ValueError("this UNet has no motion text attention; call attach_motion_text first")
    for p in processors:
        p.scale = float(scale)


def detach_motion_text(unet: nn.Module) -> None:
    """Back to plain temporal attention."""
    unet.set_attn_processor({name: AttnProcessor2_0() if isinstance(p, MotionTextAttnProcessor) else p
                             for name, p in unet.attn_processors.items()})


@contextmanager
def motion_text(unet: nn.Module, text: torch.Tensor):
    """Within the block, the motion modules read `text` (clips, tokens, dim): one caption per
    clip, in the order of the UNet call's batch. Nothing happens without attached processors."""
    processors = motion_text_processors(unet)
    for p in processors:
        p.text = text
    try:
        yield
    finally:
        for p in processors:
            p.text = None
