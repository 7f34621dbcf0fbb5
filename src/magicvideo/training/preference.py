"""Tune stage 1 from preferences with Diffusion-DPO (Wallace et al. 2023, "Diffusion Model
Alignment Using Direct Preference Optimization"): from pairs of images of one prompt, one
preferred, the UNet learns to denoise the preferred image better, and the other worse, than a
frozen copy of itself does.

    magicvideo train preference --config configs/train/preference_tiny.yaml --study STUDY.db --out runs/pref

The pairs come from a study (`magicvideo study stills` and `study auto`, or people's votes from
`study serve`: each pair goes to the side most of its votes took; ties and "same" are left out)
or from a JSON-lines file (`--pairs`) of {"prompt", "chosen", "rejected"} image paths. A LoRA
(rank `lora`) is trained over the stage by default, or the whole UNet with `lora: 0`; either way
the result is a stage-1 folder `magicvideo t2i --weights` takes.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from magicvideo.device import Placement, process_state
from magicvideo.diffusion.schedule import noise_scheduler
from magicvideo.media import load_frames
from magicvideo.models.lora import attach_lora, fuse_lora
from magicvideo.presets.tiny import TINY_T2I
from magicvideo.stages.t2i import LORA_NAME, LORA_TARGETS, TextToImage, save_t2i_lora
from magicvideo.text import unet_text_inputs
from magicvideo.training.cache import cached
from magicvideo.training.common import start_run, write_card
from magicvideo.training.loop import LoopSettings, run_loop

CACHE = "pairs.pt"


@dataclass(kw_only=True)
class PREFERENCETrainConfig(LoopSettings):
    study: str = ""  # a study database whose votes say which image of each pair is preferred
    pairs: str = ""  # or a JSON-lines file: {"prompt": ..., "chosen": IMAGE, "rejected": IMAGE} a line
    base: str = ""  # the stage-1 folder tuned; empty: the shipped tiny stage 1. It is also the frozen reference
    lora: int = 8  # rank of the LoRA trained over it; 0: the whole UNet
    beta: float = 2500.0  # how far the tuned UNet may move from the reference (Diffusion-DPO's beta)
    # > 0: plus this times the plain denoising loss on the preferred images. Why: the DPO term asks
    # only that the preferred image be denoised better *than the other*; measured on pairs that
    # differ in one shape, it let the error on both rise (6% at t 300 within 200 steps)
    sft_weight: float = 0.0
    # pairs are noised to timesteps drawn from t_min..999. Why: where a UNet already keeps the shape it
    # is given (measured on the 4x stage 1: from t 400, 0.99 of shapes) the pair teaches nothing
    t_min: int = 0
    size: int = 128
    batch_size: int = 16  # pairs a step
    steps: int = 500
    lr: float = 1e-4
    warmup: int = 50
    ema_decay: float = 0.99  # a short run: the average of its last hundred steps, not of its start
    checkpoint_every: int = 100
    eval_prompts: int = 200  # held-out prompts judged for the card, the base stage beside the tuned one


def read_pairs(config: PREFERENCETrainConfig) -> list[tuple[str, Path, Path]]:
    """(prompt, preferred image, other image) for every decided pair, checked before any work."""
    if bool(config.study) == bool(config.pairs):
        raise ValueError("give the pairs once: a study (--study STUDY.db) or a pairs file (--pairs FILE)")
    if config.study:
        return study_pairs(config.study)
    path = Path(config.pairs)
    if not path.is_file():
        raise FileNotFoundError(f"no pairs file {path}")
    found = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            prompt, chosen, rejected = item["prompt"], item["chosen"], item["rejected"]
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"{path} line {number}: expected {{\"prompt\", \"chosen\", \"rejected\"}}") from None
        files = [Path(f) if Path(f).is_absolute() else path.parent / f for f in (chosen, rejected)]
        for f in files:
            if not f.is_file():
                raise FileNotFoundError(f"{path} line {number}: no image {f}")
        found.append((" ".join(str(prompt).split()), *files))
    if not found:
        raise ValueError(f"{path} holds no pairs")
    return found


def study_pairs(db_path: str | Path) -> list[tuple[str, Path, Path]]:
    """A study's pairs, each given to the side most of its votes took (every rater's overall vote,
    people's and the automatic rater's alike); a tie, all "same", or no vote leaves it out."""
    from magicvideo.study.build import media_dir
    from magicvideo.study.db import StudyError, connect

    db = connect(db_path)
    rows = db.execute("""
        SELECT p.prompt, vl.source AS ls, vl.file AS lf, vr.source AS rs, vr.file AS rf,
               SUM(v.choice = 'left') AS left_votes, SUM(v.choice = 'right') AS right_votes
        FROM pairs p JOIN videos vl ON vl.id = p.left_video JOIN videos vr ON vr.id = p.right_video
        JOIN votes v ON v.pair = p.id AND v.criterion = 'overall'
        GROUP BY p.id ORDER BY p.position""").fetchall()
    media = media_dir(db_path)

    def file(source: str, copy_: str) -> Path:  # the original (a still, not re-encoded), else the study's copy
        return Path(source) if Path(source).is_file() else media / copy_

    found = []
    for r in rows:
        if r["left_votes"] == r["right_votes"]:
            continue
        left, right = file(r["ls"], r["lf"]), file(r["rs"], r["rf"])
        found.append((r["prompt"], *((left, right) if r["left_votes"] > r["right_votes"] else (right, left))))
    if not found:
        raise StudyError(f"{db_path} has no pair that its votes decide (vote first: `magicvideo study auto` "
                         "or `study serve`)")
    return found


def _image(path: Path, size: int) -> torch.Tensor:
    """An image file, or a video's first frame, as (3, size, size) in [0, 1]."""
    frame = load_frames(path)[0][:, 0]
    if frame.shape[-2:] != (size, size):
        frame = F.interpolate(frame[None], size=(size, size), mode="bicubic", antialias=True)[0].clamp(0, 1)
    return frame


@torch.no_grad()
def encode_pairs(stage: TextToImage, pairs: list[tuple[str, Path, Path]], size: int,
                 progress: bool = True) -> dict[str, torch.Tensor]:
    """Scaled latents of both images of every pair (n, 2, C, h, w) and the prompts' text states."""
    latents, hidden = [], []
    for start in tqdm(range(0, len(pairs), 32), desc="encode pairs", disable=not progress):
        chunk = pairs[start : start + 32]
        images = torch.stack([_image(p, size) for _, a, b in chunk for p in (a, b)]).to(stage.device)
        z = stage.vae.encode(images * 2 - 1).latent_dist.mode() * stage.vae.config.scaling_factor
        latents.append(z.unflatten(0, (len(chunk), 2)).cpu())
        hidden.append(stage.encode_prompt([prompt for prompt, _, _ in chunk]).hidden.half().cpu())
    return {"latents": torch.cat(latents), "hidden": torch.cat(hidden)}


def dpo_loss(model: torch.nn.Module, reference: torch.nn.Module, batch, beta: float,
             sft_weight: float = 0.0) -> torch.Tensor:
    """Diffusion-DPO: with one noise and timestep per pair, -log sigmoid(-beta / 2 * ((e_w - e_l)
    - (r_w - r_l))), e the tuned UNet's v-prediction error on the preferred (w) and other (l)
    image, r the reference's (Diffusion-DPO's beta multiplies the same per-pixel mean errors);
    plus sft_weight * e_w, the plain loss on the preferred images."""
    noisy, t, target, hidden = batch  # the preferred images' rows first, then the others'
    kwargs = {"encoder_hidden_states": hidden, **unet_text_inputs(model, hidden)}
    error = (model(noisy, t, **kwargs).sample - target).pow(2).mean(dim=(1, 2, 3))
    with torch.no_grad():
        ref = (reference(noisy, t, **kwargs).sample - target).pow(2).mean(dim=(1, 2, 3))
    (e_w, e_l), (r_w, r_l) = error.chunk(2), ref.chunk(2)
    return -F.logsigmoid(-0.5 * beta * ((e_w - e_l) - (r_w - r_l))).mean() + sft_weight * e_w.mean()


def _batch(cache: dict[str, torch.Tensor], config: PREFERENCETrainConfig, scheduler, step: int):
    g = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
    idx = torch.randint(len(cache["latents"]), (config.batch_size,), generator=g)
    pair = cache["latents"][idx]  # (n, 2, C, h, w)
    x0 = torch.cat((pair[:, 0], pair[:, 1]))
    noise = torch.randn(pair[:, 0].shape, generator=g).repeat(2, 1, 1, 1)
    t = torch.randint(config.t_min, scheduler.config.num_train_timesteps, (config.batch_size,), generator=g).repeat(2)
    hidden = cache["hidden"][idx].float().repeat(2, 1, 1)
    return _per_slice(scheduler.add_noise(x0, noise, t), t, scheduler.get_velocity(x0, noise, t), hidden)


def _per_slice(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Reorder rows (w_0..w_n-1, l_0..l_n-1) as (w_0, l_0, w_1, l_1, ...). Why: several processes
    each take a contiguous slice of the batch (loop.shard), and a slice must hold whole pairs; the
    loss undoes it."""
    return tuple(torch.stack(x.chunk(2), 1).flatten(0, 1) for x in tensors)


def _unslice(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return tuple(torch.cat((x[0::2], x[1::2])) for x in batch)


def train_preference(config: PREFERENCETrainConfig, out: str | Path, command: str = "",
                     progress: bool = True) -> Path:
    from magicvideo.judge.t2i import evaluate_t2i
    from magicvideo.presets import load_t2i

    out = Path(out)
    if config.beta <= 0 or config.lora < 0 or config.sft_weight < 0 or not 0 <= config.t_min < 1000:
        raise ValueError(f"beta must be > 0, lora and sft_weight >= 0, t_min in 0..999; got beta {config.beta}, "
                         f"lora {config.lora}, sft_weight {config.sft_weight}, t_min {config.t_min}")
    pairs = read_pairs(config)  # every check on the data before any work
    out = start_run(config, out)
    state = process_state()
    stage = load_t2i("tiny", config.base or None)
    with state.local_main_process_first():
        cache = cached(out / CACHE, lambda: encode_pairs(stage, pairs, config.size, progress))
    reference = copy.deepcopy(stage.unet).eval().requires_grad_(False)
    unet = stage.unet
    if config.lora:
        unet.requires_grad_(False)
        attach_lora(unet, LORA_NAME, LORA_TARGETS, config.lora)
    scheduler = noise_scheduler()

    def loss(model, batch) -> torch.Tensor:
        return dpo_loss(model, reference.to(batch[0].device), _unslice(batch), config.beta, config.sft_weight)

    result = run_loop(out / "state", unet, config, lambda s: _batch(cache, config, scheduler, s), loss,
                      "train preference", progress)
    if not state.is_main_process:
        return out / "final"
    final = out / "final"
    if config.lora:  # a LoRA over the stage it tuned, which it names (loading it loads that stage first)
        save_t2i_lora(result.model, final, stage=config.base or TINY_T2I)
        fuse_lora(result.model)
    tuned = TextToImage(result.model, stage.vae, stage.text_encoder, stage.settings)
    if not config.lora:
        tuned.save_pretrained(final)
    metrics: dict = {"pairs": len(pairs)}
    if config.eval_prompts:
        tuned.place(Placement(device=str(result.model.device)))
        base = load_t2i("tiny", config.base or None)
        for name, s in (("tuned", tuned), ("base", base)):
            metrics[name] = evaluate_t2i(s, "heldout", config.eval_prompts, progress=progress)["accuracy"]
        metrics["eval"] = f"{config.eval_prompts} held-out prompts (seed 777), one image each at seed 0, defaults"
    write_card(final, "Text-to-image UNet (tiny), preference-tuned (Diffusion-DPO)", command, config, metrics,
               result.steps, result.seconds,
               notes=f"Tuned from {len(pairs)} pairs over {config.base or 'the shipped tiny stage 1'}, which was "
                     "also the frozen reference.")
    print(metrics)
    return final
