"""The loop every single-model trainer runs: deterministic batches, AdamW with warm-up, EMA,
atomic checkpoints and resume after a kill, on accelerate (CPU, one GPU or many).

A trainer supplies two functions: `batch(step)`, which must depend only on the step (so a
resumed run sees the same data as an uninterrupted one), and `loss(model, batch)`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from diffusers.training_utils import EMAModel
from safetensors.torch import save_file
from tqdm import tqdm

from magicvideo.media import atomic_path
from magicvideo.training.common import load_checkpoint, save_checkpoint

SNAPSHOTS = "snapshots"


@dataclass(kw_only=True)
class LoopSettings:
    """The loop's settings. Every trainer's config is a LoopSettings (a subclass), so these are
    declared once; a trainer redeclares one only to change its default."""
    steps: int = 1000
    lr: float = 1e-4
    warmup: int = 200
    ema_decay: float = 0.999
    checkpoint_every: int = 200
    log_every: int = 100
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    seed: int = 0
    max_minutes: float = 0.0  # stop (checkpointed) once training, resumed parts included, ran this long; 0: no limit
    # "bf16": the loss under autocast (weights, gradients, optimizer and EMA stay fp32); "no": fp32
    mixed_precision: str = "no"
    # > 0: also keep the EMA weights every this many steps (snapshots/step_NNNNNNN.safetensors, fp16,
    # trainable parameters only), so a learning curve can be read off the run afterwards
    snapshot_every: int = 0


@dataclass
class LoopResult:
    model: torch.nn.Module  # the EMA weights, in eval mode
    steps: int
    seconds: float


def to_device(batch: Any, device: torch.device) -> Any:
    """The batch's tensors (alone, or in dicts, lists and tuples) on `device`."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def run_loop(
    out: str | Path,
    model: torch.nn.Module,
    settings: LoopSettings,
    batch: Callable[[int], Any],
    loss: Callable[[torch.nn.Module, Any], torch.Tensor],
    desc: str,
    progress: bool = True,
    on_checkpoint: Callable[[int], None] | None = None,
) -> LoopResult:
    """Train `model` (its trainable parameters) to `settings.steps`, resuming from `out` if a
    checkpoint is there. Returns the model holding the EMA weights."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if settings.mixed_precision not in ("no", "bf16"):
        raise ValueError(f"mixed_precision must be 'no' or 'bf16', not {settings.mixed_precision!r}")
    accelerator = Accelerator()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=settings.lr, betas=(0.9, 0.99), weight_decay=settings.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(settings.warmup, 1)))
    ema = EMAModel(params, decay=settings.ema_decay)
    step, elapsed = 0, 0.0
    state = load_checkpoint(out)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        ema.load_state_dict(state["ema"])
        step, elapsed = state["step"], state["elapsed"]
        print(f"resuming {desc} at step {step}", file=sys.stderr)
    model.train()
    model, opt = accelerator.prepare(model, opt)
    ema.to(accelerator.device)
    if accelerator.device.type == "cuda":  # small models: TF32 matmuls lose nothing we can measure
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True

    def checkpoint() -> None:
        save_checkpoint(out, {"model": accelerator.unwrap_model(model).state_dict(), "opt": opt.state_dict(),
                              "sched": sched.state_dict(), "ema": ema.state_dict(),
                              "step": step, "elapsed": elapsed})
        if on_checkpoint is not None:
            on_checkpoint(step)

    def snapshot() -> None:
        names = [n for n, p in accelerator.unwrap_model(model).named_parameters() if p.requires_grad]
        state = {n: s.detach().half().cpu().contiguous() for n, s in zip(names, ema.shadow_params, strict=True)}
        (out / SNAPSHOTS).mkdir(exist_ok=True)
        with atomic_path(out / SNAPSHOTS / f"step_{step:07d}.safetensors") as tmp:
            save_file(state, tmp)

    bar = tqdm(total=settings.steps, initial=step, desc=desc, disable=not progress)
    started = time.perf_counter() - elapsed
    running = 0.0
    while step < settings.steps:
        # randomness inside the model (posterior samples, dropout) is a function of the step too
        torch.manual_seed(settings.seed * 1_000_003 + step + 1)
        # torch's autocast, not accelerate's: its state is per process and one test process runs many loops;
        # around the whole loss, as trainers call their modules in their own ways
        with torch.autocast(accelerator.device.type, torch.bfloat16, enabled=settings.mixed_precision == "bf16"):
            value = loss(model, to_device(batch(step), accelerator.device))
        opt.zero_grad(set_to_none=True)
        accelerator.backward(value)
        if settings.grad_clip:
            accelerator.clip_grad_norm_(params, settings.grad_clip)
        opt.step()
        sched.step()
        ema.step(params)
        step += 1
        elapsed = time.perf_counter() - started
        bar.update(1)
        running += value.item()
        if step % settings.log_every == 0:
            print(f"{desc} step {step}: loss {running / settings.log_every:.5f}", file=sys.stderr, flush=True)
            running = 0.0
        if settings.snapshot_every and step % settings.snapshot_every == 0:
            snapshot()
        out_of_time = settings.max_minutes > 0 and elapsed > settings.max_minutes * 60
        if step % settings.checkpoint_every == 0 or step == settings.steps or out_of_time:
            checkpoint()
        if out_of_time:
            print(f"{desc}: stopping at step {step}, past max_minutes={settings.max_minutes}", file=sys.stderr)
            break
    bar.close()
    final = accelerator.unwrap_model(model)
    ema.copy_to(params)
    final.eval()
    return LoopResult(final, step, elapsed)
