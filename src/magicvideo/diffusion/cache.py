"""Cheaper sampling steps: what a step computes that an earlier step already did.

- What a step computes from inputs that do not change within a sampling loop (only the latents
  and t do), kept from the first step: the ControlNet's condition embedding (the reference's
  pixels through its conditioning convs), and the keys and values of every cross-attention (the
  prompt's, the appearance tokens', the motion modules' caption's). Exact.
- Deep features (DeepCache, Ma et al. 2024): adjacent steps' high-level UNet features barely
  differ, so on `interval - 1` steps out of every `interval` the UNet runs only its outermost
  level (the first down block and the last up block, fresh) and takes the deeper levels' output
  from the last full step; the ControlNet likewise runs only what feeds that level. Approximate:
  benchmarks/vs_diffusers.py measures what it costs in the judge's readings.

Both are diffusers hooks (`diffusers.hooks.ModelHook`) on the models' blocks, attached for one
sampling loop and removed after it:

    with StepCache(unet, controlnet, interval=2) as cache:
        for i, t in enumerate(timesteps):
            cache.step(i)
            ...  # UNet / ControlNet calls as usual

Outputs are kept per call within a step (windowed sampling calls the models once per window).
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.hooks import HookRegistry, ModelHook

_NAME = "magicvideo_step_cache"


class _Calls(ModelHook):
    """On a model: counts its calls within the current step, so its blocks know which call this is."""

    def __init__(self) -> None:
        super().__init__()
        self.index = -1

    def pre_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any):
        self.index += 1
        return args, kwargs


class _Keep(ModelHook):
    """On a block: runs it and keeps its output when the cache says compute, else returns the kept
    output of the same call of an earlier step without running it."""

    def __init__(self, cache: StepCache, calls: _Calls, always_reuse: bool = False) -> None:
        super().__init__()
        self.cache, self.calls, self.always_reuse = cache, calls, always_reuse
        self.kept: dict[tuple, Any] = {}

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        # the call's place in the step, and its input's shape: a loop whose batch changes between
        # steps (guidance on some steps only) computes afresh instead of reusing another shape's
        first = next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), None)
        key = (self.calls.index, None if first is None else tuple(first.shape))
        if (self.always_reuse or self.cache.reusing) and key in self.kept:
            return self.kept[key]
        out = self.fn_ref.original_forward(*args, **kwargs)
        self.kept[key] = out
        return out


class StepCache:
    """Within the block, `unet` (a UNet2DConditionModel or UNetMotionModel, or None: nothing to
    cache) and `controlnet` (a ControlNetModel, SparseControlNetModel or None) reuse what earlier
    steps computed: what reads only fixed inputs always; the deep levels when `interval` > 1, on
    every step whose index is not a multiple of it. Call `step(i)` before each step's model calls."""

    def __init__(self, unet: torch.nn.Module | None, controlnet: torch.nn.Module | None = None,
                 interval: int = 1) -> None:
        if interval < 1:
            raise ValueError(f"cache interval must be at least 1, got {interval}")
        self.interval, self.reusing = interval, False
        # (module, its hook, whether it had a hook registry and a forward of its own before)
        self._hooked: list[tuple[torch.nn.Module, ModelHook, bool, bool]] = []
        self._plan = [(m, is_controlnet) for m, is_controlnet in ((unet, False), (controlnet, True)) if m is not None]

    def _attach(self, module: torch.nn.Module, hook: ModelHook) -> None:
        before = (hasattr(module, "_diffusers_hook"), "forward" in module.__dict__)  # e.g. accelerate's offload hook
        HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, _NAME)
        self._hooked.append((module, hook, *before))

    def __enter__(self) -> StepCache:
        for model, is_controlnet in self._plan:
            calls = _Calls()
            self._attach(model, calls)
            if is_controlnet and hasattr(model, "controlnet_cond_embedding"):
                self._attach(model.controlnet_cond_embedding, _Keep(self, calls, always_reuse=True))
            for projection in constant_projections(model):
                self._attach(projection, _Keep(self, calls, always_reuse=True))
            if self.interval > 1:
                for block in deep_blocks(model):
                    self._attach(block, _Keep(self, calls))
        return self

    def __exit__(self, *exc: Any) -> None:
        for module, hook, had_registry, had_forward in self._hooked:
            module._diffusers_hook.remove_hook(_NAME, recurse=False)  # puts back the forward it wrapped
            if not had_forward:  # leave the module as it was: its class's forward
                module.__dict__.pop("forward", None)
            if not had_registry:
                del module._diffusers_hook
            if isinstance(hook, _Keep):  # hooks and forwards form cycles: free the kept tensors now, not at GC
                hook.kept.clear()
        self._hooked.clear()

    def step(self, index: int) -> None:
        """Before step `index` (0 first) of the loop: whether its deep levels are computed or reused."""
        self.reusing = self.interval > 1 and index % self.interval != 0
        for _, hook, *_ in self._hooked:
            if isinstance(hook, _Calls):
                hook.index = -1


def constant_projections(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The layers that read only what a sampling loop holds fixed: the key and value projections of
    every cross-attention (diffusers' `Attention` with `is_cross_attention`: the prompt), of the
    IP-Adapter-style appearance branch (`to_k_ip`, `to_v_ip`: its tokens) and of the motion
    modules' caption attention (`to_k_text`, `to_v_text`)."""
    from diffusers.models.attention_processor import Attention

    found = []
    for module in model.modules():
        if isinstance(module, Attention):
            if module.is_cross_attention:
                found += [module.to_k, module.to_v]
            processor = module.processor
            for name in ("to_k_ip", "to_v_ip"):
                found += list(getattr(processor, name, None) or [])
            found += [getattr(processor, name) for name in ("to_k_text", "to_v_text") if hasattr(processor, name)]
    return found


def deep_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The blocks a reusing step skips: every down block after the first, the mid block and (for a
    UNet) every up block before the last, whose output the last up block reads with the first down
    block's fresh skips. A ControlNet's skipped blocks feed only the UNet's skipped levels."""
    blocks = list(model.down_blocks[1:])
    if getattr(model, "mid_block", None) is not None:
        blocks.append(model.mid_block)
    if hasattr(model, "up_blocks"):
        blocks += list(model.up_blocks[:-1])
    return blocks
