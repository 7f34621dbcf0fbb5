"""The loop every single-model trainer runs: deterministic batches, AdamW with warm-up, EMA,
atomic checkpoints and resume after a kill, on accelerate (CPU, one GPU or many, one machine
or several: `accelerate launch` starts the processes, this loop shares the work).

A trainer supplies two functions: `batch(step)`, which must depend only on the step (so a
resumed run sees the same data as an uninterrupted one), and `loss(model, batch)`, a mean over
the batch's items. `batch(step)` draws the global batch, the same in every process; each
process trains on its own equal slice of it (`shard`) and accelerate averages the gradients, so
a run's weights depend on its config, not on how many processes ran it, and a run resumes with
any process count that divides its batch. Only the main process writes (checkpoints, EMA
snapshots, logs, the progress bar).
"""

from __future__ import annotations

import os
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

from magicvideo.device import process_state
from magicvideo.media import atomic_path
from magicvideo.training.common import load_checkpoint, save_checkpoint

SNAPSHOTS = "snapshots"


def snapshot_file(state: str | os.PathLike, step: int) -> Path:
    """Where the loop keeps its EMA snapshot of `step` (state: the folder run_loop is given,
    a trainer's RUN/state)."""
    return Path(state) / SNAPSHOTS / f"step_{step:07d}.safetensors"


def kept_snapshots(state: str | os.PathLike) -> dict[int, Path]:
    """{step: file} of the EMA snapshots kept in `state`, by step."""
    found = (Path(state) / SNAPSHOTS).glob("step_*.safetensors")
    return dict(sorted((int(p.stem.split("_")[1]), p) for p in found))


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


def shard(batch: Any, index: int, count: int) -> Any:
    """Process `index`'s share of a global batch among `count`: every tensor's first dimension
    (the batch's items) cut in `count` equal parts; other values pass through."""
    if count == 1:
        return batch
    if isinstance(batch, torch.Tensor):
        n = batch.shape[0] if batch.dim() else 0
        if n % count:
            raise ValueError(f"a batch of {n} items does not split evenly over {count} processes: "
                             f"make batch_size (and image_batch_size) a multiple of {count}")
        return batch[index * n // count : (index + 1) * n // count]
    if isinstance(batch, dict):
        return {k: shard(v, index, count) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(shard(v, index, count) for v in batch)
    return batch


class Objective(torch.nn.Module):
    """A model and its loss as one module. Why: a distributed wrapper (DDP) synchronises the
    gradients of what runs inside its forward, and trainers call their models in their own ways
    (a VAE's encode and decode, a stage's predict), so the loss itself is the forward."""

    def __init__(self, model: torch.nn.Module, loss: Callable[[torch.nn.Module, Any], torch.Tensor]) -> None:
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, batch: Any) -> torch.Tensor:
        return self.loss(self.model, batch)


def check_batches(config: Any) -> None:
    """Before any work: the batches a config draws (`batch_size`, and stage 2's `image_batch_size`
    when it draws image batches) must split evenly over the processes running it."""
    count = process_state().num_processes
    sizes = {"batch_size": config.batch_size}
    if getattr(config, "image_every", 0) > 0:
        sizes["image_batch_size"] = config.image_batch_size
    for name, size in sizes.items():
        if size % count:
            raise ValueError(f"{name} {size} does not split evenly over {count} processes: the batch is the "
                             f"global one, make it a multiple of {count}")


def accelerator_for_training() -> Accelerator:
    process_state()  # first: the CPU processes join one group
    return Accelerator()


def agree(accelerator: Accelerator, value: float, what: str) -> None:
    """Every process must hold the same `value` (a resumed step): else one of them did not see
    the run's checkpoint, and the processes would train out of step."""
    if accelerator.num_processes == 1:
        return
    seen = accelerator.gather(torch.tensor([float(value)], device=accelerator.device)).tolist()
    if len(set(seen)) > 1:
        raise FileNotFoundError(f"the processes disagree on the {what} ({seen}): every machine must see the "
                                "run's output folder (put --out on storage they share)")


def any_process(accelerator: Accelerator, flag: bool) -> bool:
    """True in every process when `flag` is True in any (so all stop at the same step)."""
    if accelerator.num_processes == 1:
        return flag
    return bool(accelerator.reduce(torch.tensor([float(flag)], device=accelerator.device), "sum").item() > 0)


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
    accelerator = accelerator_for_training()
    main = accelerator.is_main_process
    if main:
        out.mkdir(parents=True, exist_ok=True)
    if settings.mixed_precision not in ("no", "bf16"):
        raise ValueError(f"mixed_precision must be 'no' or 'bf16', not {settings.mixed_precision!r}")
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
        if main:
            print(f"resuming {desc} at step {step}", file=sys.stderr)
    agree(accelerator, step, "step to resume from")
    model.train()
    objective, opt = accelerator.prepare(Objective(model, loss), opt)
    ema.to(accelerator.device)
    if accelerator.device.type == "cuda":  # small models: TF32 matmuls lose nothing we can measure
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True

    def checkpoint() -> None:
        save_checkpoint(out, {"model": model.state_dict(), "opt": opt.state_dict(),
                              "sched": sched.state_dict(), "ema": ema.state_dict(),
                              "step": step, "elapsed": elapsed})
        if on_checkpoint is not None:
            on_checkpoint(step)

    def snapshot() -> None:
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        state = {n: s.detach().half().cpu().contiguous() for n, s in zip(names, ema.shadow_params, strict=True)}
        path = snapshot_file(out, step)
        path.parent.mkdir(exist_ok=True)
        with atomic_path(path) as tmp:
            save_file(state, tmp)

    bar = tqdm(total=settings.steps, initial=step, desc=desc, disable=not (progress and main))
    started = time.perf_counter() - elapsed
    running = 0.0
    while step < settings.steps:
        # randomness inside the model (dropout) is a function of the step too
        torch.manual_seed(settings.seed * 1_000_003 + step + 1)
        mine = shard(batch(step), accelerator.process_index, accelerator.num_processes)
        # torch's autocast, not accelerate's: its state is per process and one test process runs many loops;
        # around the whole loss, as trainers call their modules in their own ways
        with torch.autocast(accelerator.device.type, torch.bfloat16, enabled=settings.mixed_precision == "bf16"):
            value = objective(to_device(mine, accelerator.device))
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
        running += accelerator.reduce(value.detach(), "mean").item() if accelerator.num_processes > 1 else value.item()
        if step % settings.log_every == 0:
            if main:
                print(f"{desc} step {step}: loss {running / settings.log_every:.5f}", file=sys.stderr, flush=True)
            running = 0.0
        if main and settings.snapshot_every and step % settings.snapshot_every == 0:
            snapshot()
        # the main process's clock decides, so every process stops at the same step
        out_of_time = any_process(accelerator, main and settings.max_minutes > 0
                                  and elapsed > settings.max_minutes * 60)
        if main and (step % settings.checkpoint_every == 0 or step == settings.steps or out_of_time):
            checkpoint()
        if out_of_time:
            if main:
                print(f"{desc}: stopping at step {step}, past max_minutes={settings.max_minutes}", file=sys.stderr)
            break
    bar.close()
    accelerator.wait_for_everyone()  # the last checkpoint is on disk before any process moves on
    ema.copy_to(params)
    model.eval()
    return LoopResult(model, step, elapsed)
