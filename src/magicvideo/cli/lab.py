"""The lab's commands: the synthetic world, the judge, training, and tools for weights."""

from __future__ import annotations

import argparse
import json
import shlex

from magicvideo.media import FLAVOURS

TRAINABLE = ("vae", "t2i", "i2v", "v2v", "vfi", "preference", "distill", "distill-i2v")


def run_synth(args: argparse.Namespace) -> None:
    from magicvideo.world.write import write_world

    if args.size < 8:
        raise ValueError(f"--size must be at least 8, got {args.size}")
    if args.flavour == "web" and args.size % 2:
        raise ValueError(f"--flavour web needs an even --size, got {args.size}")
    meta = write_world(args.out, args.count, args.split, args.seed, args.size, args.fps, args.frames,
                       args.flavour, progress=not args.quiet)
    print(f"wrote {args.count} clip{'s' if args.count != 1 else ''} and {meta}")


def run_synth_pairs(args: argparse.Namespace) -> None:
    from magicvideo.world.pairs import write_pairs

    if args.size < 8:
        raise ValueError(f"--size must be at least 8, got {args.size}")
    path = write_pairs(args.out, args.count, args.change, args.split, args.seed, args.size, progress=not args.quiet)
    print(f"wrote {args.count} pair{'s' if args.count != 1 else ''} ({args.change} changed) and {path}")


def run_judge(args: argparse.Namespace) -> None:
    from magicvideo.judge.files import judge_path

    report = judge_path(args.path, args.prompt, progress=not args.quiet)
    if args.summary:
        del report["per_clip"]
    print(json.dumps(report, indent=None if args.compact else 2))


def trainer(stage: str) -> tuple:
    """(config class, train function) of a stage, importing only that trainer."""
    import importlib

    name = stage.replace("-", "_")
    module = importlib.import_module(f"magicvideo.training.{name}")
    return getattr(module, f"{name.upper()}TrainConfig"), getattr(module, f"train_{name}")


def run_train(args: argparse.Namespace) -> None:
    from magicvideo.device import process_state
    from magicvideo.training.common import load_config
    from magicvideo.training.loop import check_batches

    config_cls, train = trainer(args.stage)
    config = load_config(config_cls, args.config, {"steps": args.steps, "study": args.study, "pairs": args.pairs})
    check_batches(config)
    command = "magicvideo " + " ".join(shlex.quote(a) for a in args.argv)
    final = train(config, args.out, command=command, progress=not args.quiet)
    if process_state().is_main_process:
        print(f"trained weights: {final}")


def run_extract_lora(args: argparse.Namespace) -> None:
    from magicvideo.training.extract import extract_t2i_lora

    if args.rank < 1:
        raise ValueError(f"--rank must be at least 1, got {args.rank}")
    if args.distill_steps < 0:
        raise ValueError(f"--distill-steps must be 0 or more, got {args.distill_steps}")
    if args.distill_steps:
        from magicvideo.training.t2i import T2IDistillConfig, distill_t2i_lora

        config = T2IDistillConfig(tuned=args.tuned, data=args.data or "", base=args.base or "", rank=args.rank,
                                  steps=args.distill_steps)
        command = "magicvideo " + " ".join(shlex.quote(a) for a in args.argv)
        metrics = distill_t2i_lora(config, args.output, command, not args.quiet)
        print(f"wrote a rank-{args.rank} LoRA to {args.output}, fitted in {args.distill_steps} steps: its predictions "
              f"are {metrics['prediction_gap_distilled']:.3f} as far from the fine-tune's as the base UNet's "
              f"(truncated SVD alone: {metrics['prediction_gap_svd']:.3f})")
        return
    kept = extract_t2i_lora(args.tuned, args.output, args.rank, args.base)
    share = sum(kept.values()) / len(kept)
    print(f"wrote a rank-{args.rank} LoRA over {len(kept)} layers to {args.output} (it keeps {share:.0%} of the "
          "change's squared norm, mean over layers)")


def run_export_snapshot(args: argparse.Namespace) -> None:
    from magicvideo.training.t2i import export_snapshot

    out = export_snapshot(args.run, args.step, args.output)
    print(f"wrote step {args.step} of {args.run} as a stage folder: {out} (its UNet: {out / 'unet'})")


def run_random_weights(args: argparse.Namespace) -> None:
    from magicvideo.device import DTYPES
    from magicvideo.presets.sd15 import check_folder, write_random

    root = write_random(args.out, dtype=DTYPES[args.dtype], seed=args.seed, progress=not args.quiet)
    check_folder(root)
    size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) / 2**30
    print(f"wrote random-init sd15 weights ({size:.1f} GiB, {args.dtype}; not a trained model): {root}")


def add_parsers(sub) -> None:
    p = sub.add_parser("synth", help="write clips of the synthetic world as mp4 + metadata.jsonl")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--count", type=int, required=True, help="number of clips")
    p.add_argument("--split", choices=("train", "heldout"), default="train")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=128, help="frame side in pixels (default 128)")
    p.add_argument("--fps", type=float, default=24, help="frames per second (default 24)")
    p.add_argument("--frames", type=int, default=46, help="frames per clip (default 46)")
    p.add_argument("--flavour", choices=tuple(FLAVOURS), default="measure",
                   help="measure: yuv444p, keeps colours for measurement (default); web: yuv420p, plays anywhere")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_synth)

    p = sub.add_parser("synth-pairs", help="write preference pairs of world stills: each as its caption says, and "
                       "with one object's shape (or colour) changed (for `magicvideo train preference --pairs`)")
    p.add_argument("--out", required=True, help="output folder: PNG pairs + pairs.jsonl")
    p.add_argument("--count", type=int, required=True, help="number of pairs")
    p.add_argument("--change", choices=("shape", "colour"), default="shape", help="what the rejected image gets wrong")
    p.add_argument("--split", choices=("train", "heldout"), default="train")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_synth_pairs)

    p = sub.add_parser("judge", help="read attributes and temporal metrics off frames; print JSON")
    p.add_argument("path", help="a synth folder, a video, a folder of frames, or an image")
    p.add_argument("--prompt", help="score the frames against the attributes this prompt names")
    p.add_argument("--summary", action="store_true", help="leave out the per-clip details")
    p.add_argument("--compact", action="store_true", help="one-line JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_judge)

    p = sub.add_parser("train", help="train a stage (resumes when run again on the same --out)")
    p.add_argument("stage", choices=TRAINABLE)
    p.add_argument("--config", help="YAML config (default: the built-in defaults, as configs/train/<stage>_tiny.yaml)")
    p.add_argument("--out", required=True, help="run folder: checkpoints, cache, final weights")
    p.add_argument("--steps", type=int, help="override the config's steps")
    p.add_argument("--study", help="preference: the study database whose votes it learns from")
    p.add_argument("--pairs", help="preference: or a JSON-lines file of {prompt, chosen, rejected} images")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_train)

    p = sub.add_parser("extract-lora", help="carry a fully fine-tuned stage-1 UNet as a LoRA over the base UNet "
                       "(the folder `magicvideo t2i --weights` takes)")
    p.add_argument("tuned", help="the fine-tuned UNet folder, or a saved text-to-image stage folder")
    p.add_argument("-o", "--output", required=True, help="the LoRA folder to write")
    p.add_argument("--rank", type=int, default=16, help="LoRA rank (default 16: 2.7 MB for the tiny UNet)")
    p.add_argument("--base", help="the UNet it goes over (default: the shipped tiny UNet)")
    p.add_argument("--distill-steps", type=int, default=0,
                   help="then fit the LoRA to the fine-tune's predictions for this many steps (300: about 6 "
                   "minutes on 2 CPU cores; 0: the truncated SVD alone)")
    p.add_argument("--data", help="with --distill-steps: the `magicvideo train t2i` output folder whose caches "
                   "to fit on (default: the folder TUNED is in)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_extract_lora)

    p = sub.add_parser("export-snapshot", help="write the EMA snapshot a `train t2i` run kept at one step as a "
                       "stage folder (`magicvideo t2i --weights` loads it)")
    p.add_argument("run", help="the `magicvideo train t2i` output folder")
    p.add_argument("--step", type=int, required=True, help="the snapshot's step (snapshot_every in its config)")
    p.add_argument("-o", "--output", required=True, help="the stage folder to write (new or empty)")
    p.set_defaults(func=run_export_snapshot)

    p = sub.add_parser("random-weights", help="write a random-init weights folder at the sd15 preset's real shapes "
                       "(runs the full-size path with nothing downloaded; not a model)")
    p.add_argument("out", help="the folder to write (must be empty or new)")
    p.add_argument("--dtype", choices=("fp16", "fp32", "bf16"), default="fp16", help="stored precision (default fp16, "
                   "about 7 GB)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_random_weights)
