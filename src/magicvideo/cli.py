"""The `magicvideo` command. Each subcommand parses its arguments, checks them, and calls
the library; a user error is one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import json
import shlex
import sys

from safetensors import SafetensorError

from magicvideo import __version__
from magicvideo.eval.prompt import PromptError
from magicvideo.media import FLAVOURS, MediaError
from magicvideo.stages.vfi import METHODS
from magicvideo.text import is_blank

TRAINABLE = ("vae", "t2i", "i2v", "v2v", "vfi")
# generate's flags that decide a run (a resumed run keeps its manifest's; where to run it may change)
RUN_FLAGS = ("seed", "out", "image", "stages", "frames", "t2i_steps", "t2i_guidance", "i2v_steps", "i2v_guidance",
             "v2v_steps", "v2v_strength", "gif", "t2i_size", "i2v_size", "v2v_size", "preset", "weights", "dtype",
             "flavour")


def _synth(args: argparse.Namespace) -> None:
    from magicvideo.synth.write import write_world

    if args.size < 8:
        raise ValueError(f"--size must be at least 8, got {args.size}")
    if args.flavour == "web" and args.size % 2:
        raise ValueError(f"--flavour web needs an even --size, got {args.size}")
    meta = write_world(args.out, args.count, args.split, args.seed, args.size, args.fps, args.frames,
                       args.flavour, progress=not args.quiet)
    print(f"wrote {args.count} clip{'s' if args.count != 1 else ''} and {meta}")


def _judge(args: argparse.Namespace) -> None:
    from magicvideo.eval.files import judge_path

    report = judge_path(args.path, args.prompt, progress=not args.quiet)
    if args.summary:
        del report["per_clip"]
    print(json.dumps(report, indent=None if args.compact else 2))


def _trainer(stage: str) -> tuple:
    """(config class, train function) of a stage, importing only that trainer."""
    import importlib

    module = importlib.import_module(f"magicvideo.training.{stage}")
    return getattr(module, f"{stage.upper()}TrainConfig"), getattr(module, f"train_{stage}")


def _train(args: argparse.Namespace) -> None:
    from magicvideo.training.common import load_config

    config_cls, train = _trainer(args.stage)
    config = load_config(config_cls, args.config, {"steps": args.steps})
    command = "magicvideo " + " ".join(shlex.quote(a) for a in args.argv)
    final = train(config, args.out, command=command, progress=not args.quiet)
    print(f"trained weights: {final}")


def _interpolate(args: argparse.Namespace) -> None:
    from magicvideo.media import read_video, write_video
    from magicvideo.stages.vfi import FrameInterpolator

    if args.times < 1:
        raise ValueError(f"--times must be at least 1, got {args.times}")
    video, fps = read_video(args.input)  # fails on a bad file before any model loads
    if FLAVOURS[args.flavour]["pix_fmt"] == "yuv420p" and (video.shape[-1] % 2 or video.shape[-2] % 2):
        raise ValueError(f"--flavour web needs even frame sides, got {video.shape[-1]}x{video.shape[-2]}; "
                         "use --flavour measure")
    interpolator = FrameInterpolator.from_pretrained(args.weights, method=args.model)
    frames = interpolator(video, times=args.times, progress=not args.quiet).frames
    write_video(args.output, frames, (fps or 8.0) * args.times, args.flavour)
    print(f"{video.shape[1]} frames at {fps:g} fps -> {frames.shape[1]} frames at {(fps or 8.0) * args.times:g} fps: "
          f"{args.output}")


def _extract_lora(args: argparse.Namespace) -> None:
    from magicvideo.stages.t2i import extract_t2i_lora

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


def _t2i(args: argparse.Namespace) -> None:
    from pathlib import Path

    from magicvideo.media import write_image
    from magicvideo.stages.t2i import load_t2i

    if is_blank(args.prompt):
        raise PromptError("the prompt is empty")
    if Path(args.output).suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
        raise ValueError(f"-o must name a .png, .jpg or .webp file, got {args.output}")
    if args.size is not None and args.size <= 0:  # its multiple is the stage's VAE's, checked once loaded
        raise ValueError(f"--size must be positive, got {args.size}")
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be at least 1, got {args.steps}")
    stage = load_t2i(args.preset, args.weights, _placement(args))
    image = stage(args.prompt, seed=args.seed, steps=args.steps, guidance=args.guidance, size=args.size,
                  progress=not args.quiet).images[0]
    print(f"wrote {write_image(args.output, image)}")


def _i2v(args: argparse.Namespace) -> None:
    from pathlib import Path

    from magicvideo.media import VIDEO_SUFFIXES, read_image, write_video
    from magicvideo.stages.i2v import load_i2v
    from magicvideo.synth.scene import KEYFRAME_FPS

    if is_blank(args.prompt):
        raise PromptError("the prompt is empty")
    if Path(args.output).suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"-o must name a video file ({', '.join(VIDEO_SUFFIXES)}), got {args.output}")
    if not 1 <= args.frames <= 32:
        raise ValueError(f"--frames must be between 1 and 32 (the motion module's length), got {args.frames}")
    if args.noise_prior is not None and not 0.0 <= args.noise_prior < 1.0:
        raise ValueError(f"--noise-prior must be in [0, 1), got {args.noise_prior}")
    if args.noise_prior_decay is not None and not 0.0 <= args.noise_prior_decay <= 1.0:
        raise ValueError(f"--noise-prior-decay must be in [0, 1], got {args.noise_prior_decay}")
    if args.appearance_scale is not None and args.appearance_scale < 0:
        raise ValueError(f"--appearance-scale must be at least 0, got {args.appearance_scale}")
    if args.motion_text_scale is not None and args.motion_text_scale < 0:
        raise ValueError(f"--motion-text-scale must be at least 0, got {args.motion_text_scale}")
    if args.motion_guidance is not None and args.motion_guidance < 0:
        raise ValueError(f"--motion-guidance must be at least 0, got {args.motion_guidance}")
    if args.controlnet_scale is not None and args.controlnet_scale < 0:
        raise ValueError(f"--controlnet-scale must be at least 0, got {args.controlnet_scale}")
    if args.negative_prompt is not None and is_blank(args.negative_prompt):
        raise PromptError("the negative prompt is empty (leave --negative-prompt out for the default)")
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be at least 1, got {args.steps}")
    image = read_image(args.image)  # an unreadable image fails before any model loads
    _check_size(args)
    stage = load_i2v(args.preset, args.weights, _placement(args))
    size = args.size or stage.settings.size
    if size % stage.size_multiple():
        raise ValueError(f"--size must be a multiple of {stage.size_multiple()} for this UNet, got {size}")
    if image.shape[-2:] != (size, size):
        print(f"note: the reference image is {image.shape[2]}x{image.shape[1]}; resized to {size}x{size}",
              file=sys.stderr)
    frames = stage(args.prompt, image, seed=args.seed, frames=args.frames, steps=args.steps, guidance=args.guidance,
                   noise_prior_strength=args.noise_prior, appearance_scale=args.appearance_scale,
                   use_controlnet=not args.no_controlnet, size=size, progress=not args.quiet,
                   motion_text_scale=args.motion_text_scale, noise_prior_decay=args.noise_prior_decay,
                   negative_prompt=args.negative_prompt, motion_guidance=args.motion_guidance,
                   controlnet_scale=args.controlnet_scale).frames[0]
    write_video(args.output, frames, KEYFRAME_FPS, args.flavour)
    print(f"wrote {frames.shape[1]} keyframes at {size}x{size}, {KEYFRAME_FPS:g} fps: {args.output}")


def _v2v(args: argparse.Namespace) -> None:
    from pathlib import Path

    from magicvideo.media import VIDEO_SUFFIXES, read_image, read_video, write_video
    from magicvideo.stages.i2v import load_i2v
    from magicvideo.stages.v2v import load_v2v, v2v_folder

    if is_blank(args.prompt):
        raise PromptError("the prompt is empty")
    if Path(args.output).suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"-o must name a video file ({', '.join(VIDEO_SUFFIXES)}), got {args.output}")
    if args.strength is not None and not 0.0 <= args.strength <= 1.0:
        raise ValueError(f"--strength must be in [0, 1], got {args.strength}")
    if args.appearance_scale is not None and args.appearance_scale < 0:
        raise ValueError(f"--appearance-scale must be at least 0, got {args.appearance_scale}")
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be at least 1, got {args.steps}")
    if args.hold is not None and not 0.0 <= args.hold <= 1.0:
        raise ValueError(f"--hold must be in [0, 1], got {args.hold}")
    if args.back_projection is not None and args.back_projection < 0:
        raise ValueError(f"--back-projection must be at least 0, got {args.back_projection}")
    video, fps = read_video(args.input)  # unreadable inputs fail before any model loads
    image = read_image(args.image)
    if not 1 <= video.shape[1] <= 32:
        raise ValueError(f"the input has {video.shape[1]} frames; the motion module takes 1 to 32")
    _check_size(args)
    if args.preset == "sd15":
        v2v_folder("sd15", args.weights)  # checked before anything loads
        stage = load_v2v("sd15", args.weights, i2v=load_i2v("sd15", args.weights, _placement(args)))
    else:
        folder = v2v_folder(args.preset, args.weights)
        stage = load_v2v(args.preset, folder, i2v=load_i2v(args.preset, args.i2v_weights, _placement(args)))
    size = args.size or stage.settings.size
    if size % stage.size_multiple():
        raise ValueError(f"--size must be a multiple of {stage.size_multiple()} for this UNet, got {size}")
    if video.shape[-1] != video.shape[-2] or video.shape[-1] > size:
        raise ValueError(f"the input frames are {video.shape[-1]}x{video.shape[-2]}; expected square frames of at "
                         f"most {size}x{size}")
    frames = stage(args.prompt, video, image, seed=args.seed, steps=args.steps, strength=args.strength,
                   guidance=args.guidance, appearance_scale=args.appearance_scale,
                   use_controlnet=not args.no_controlnet, back_projection=args.back_projection, size=size,
                   hold=args.hold, kernel=args.back_projection_kernel, progress=not args.quiet).frames[0]
    write_video(args.output, frames, fps, args.flavour)
    print(f"wrote {frames.shape[1]} frames at {size}x{size}, {fps:g} fps: {args.output}")


def _generate(args: argparse.Namespace) -> None:
    from pathlib import Path

    from magicvideo.media import read_image
    from magicvideo.pipeline import (
        STAGES,
        MagicVideoPipeline,
        RunSettings,
        check_settings,
        check_stages,
        default_run_dir,
        weights_size_multiple,
    )
    from magicvideo.runlock import RunLock

    progress = not args.quiet
    if args.resume:
        if args.prompt is not None:
            raise ValueError("give a prompt or --resume RUN_DIR, not both (a resumed run keeps its own settings)")
        defaults = vars(build_parser().parse_args(["generate", "--resume", args.resume]))
        given = [k for k in RUN_FLAGS if getattr(args, k) != defaults[k]]
        if given:
            raise ValueError(f"--resume keeps the run's own settings; leave out --{given[0].replace('_', '-')}")
        out = MagicVideoPipeline.resume(args.resume, progress=progress, placement=_placement(args))
    else:
        if args.prompt is None or is_blank(args.prompt):
            raise PromptError("the prompt is empty")
        default = STAGES[1:] if args.image else STAGES
        stages = check_stages(tuple(args.stages.split(",")) if args.stages else default, args.image)
        run_dir = Path(args.out) if args.out else default_run_dir(args.prompt, args.seed)
        if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
            RunLock.claim(run_dir)  # raises, saying why the folder cannot be this run's
        if args.image:
            read_image(args.image)  # an unreadable image fails before any model loads
        settings = {k: getattr(args, k) for k in ("frames", "t2i_steps", "t2i_guidance", "i2v_steps", "i2v_guidance",
                                                  "v2v_steps", "v2v_strength", "t2i_size", "i2v_size", "v2v_size",
                                                  "gif", "flavour")}
        placement = _placement(args)
        weights = str(Path(args.weights).resolve()) if args.weights else None  # the manifest outlives the cwd
        run = RunSettings(prompt=args.prompt, seed=args.seed, preset=args.preset, weights=weights,
                          dtype=placement.dtype, image=args.image, stages=stages, **settings)
        check_settings(run, weights_size_multiple(args.preset, weights))  # before any weight loads
        lock = RunLock.claim(run_dir)  # before any weight loads: of two runs on one --out, one fails now
        try:
            pipe = MagicVideoPipeline.from_preset(args.preset, weights, placement=placement)
        except BaseException:
            lock.release(abandon=True)
            raise
        out = pipe.run(run, run_dir, progress=progress, lock=lock)
    last = [name for name in STAGES if name in out.paths][-1]
    print(f"video: {out.paths[last]}" + (f" (and {out.paths['gif']})" if "gif" in out.paths else ""))
    print(f"run directory: {out.run_dir}")


def _check_size(args: argparse.Namespace) -> None:
    """--size of the i2v and v2v commands, checked before loading where the configs tell enough."""
    if args.size is None:
        return
    if args.size <= 0:  # the multiple is the stage's (its VAE's factor times its UNet's), checked once loaded
        raise ValueError(f"--size must be positive, got {args.size}")
    if args.preset == "sd15":
        from magicvideo.pipeline import weights_size_multiple

        multiple = weights_size_multiple("sd15", args.weights)
        if args.size % multiple:
            raise ValueError(f"--size must be a multiple of {multiple} for this UNet, got {args.size}")


def _quiet_libraries(quiet: bool) -> None:
    """diffusers' and transformers' own notices are about their internals, not the user's run;
    with --quiet their loading bars go too."""
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    if quiet:
        diffusers_logging.disable_progress_bar()
        transformers_logging.disable_progress_bar()


def _add_placement(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when there is one, else cpu)")
    p.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), help="weights' precision (default: fp16 on a GPU, "
                   "fp32 on the CPU)")
    p.add_argument("--offload", action="store_true", help="model CPU offload: each model goes to the device only "
                   "while it runs (less GPU memory, slower)")
    p.add_argument("--vae-chunk", type=int, default=16, help="frames per VAE call (default 16; lower: less memory)")
    p.add_argument("--vae-tiling", action="store_true", help="the VAE works in tiles (large frames, less memory)")


def _placement(args: argparse.Namespace):
    from magicvideo.device import Placement, default_device

    device = args.device or default_device()
    dtype = args.dtype or ("fp16" if device.startswith("cuda") else "fp32")
    return Placement(device=device, dtype=dtype, offload=args.offload, vae_chunk=args.vae_chunk,
                     vae_tiling=args.vae_tiling)


def _random_weights(args: argparse.Namespace) -> None:
    from magicvideo.device import DTYPES
    from magicvideo.sd15 import check_folder, write_random

    root = write_random(args.out, dtype=DTYPES[args.dtype], seed=args.seed, progress=not args.quiet)
    check_folder(root)
    size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) / 2**30
    print(f"wrote random-init sd15 weights ({size:.1f} GiB, {args.dtype}; not a trained model): {root}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="magicvideo", description="MagicVideo-V2 text-to-video.")
    parser.add_argument("--version", action="version", version=f"magicvideo {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

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
    p.set_defaults(func=_synth)

    p = sub.add_parser("judge", help="read attributes and temporal metrics off frames; print JSON")
    p.add_argument("path", help="a synth folder, a video, a folder of frames, or an image")
    p.add_argument("--prompt", help="score the frames against the attributes this prompt names")
    p.add_argument("--summary", action="store_true", help="leave out the per-clip details")
    p.add_argument("--compact", action="store_true", help="one-line JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_judge)

    p = sub.add_parser("t2i", help="stage 1: a prompt becomes a reference image")
    p.add_argument("prompt")
    p.add_argument("-o", "--output", required=True, help="output image (.png)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, help="sampler steps (default: the preset's, 20 for tiny)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: the preset's, 4 for tiny)")
    p.add_argument("--size", type=int, help="image side, a multiple of 8 (default: the preset's, 128 for tiny)")
    p.add_argument("--preset", choices=("tiny", "sd15"), default="tiny")
    p.add_argument("--weights", help="tiny: a saved stage folder (default: shipped weights); "
                   "sd15: a local diffusers text-to-image pipeline folder")
    _add_placement(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_t2i)

    p = sub.add_parser("i2v", help="stage 2: a prompt and a reference image become low-res keyframes")
    p.add_argument("prompt")
    p.add_argument("--image", required=True, help="reference image (resized to the stage's size, 64x64 for tiny)")
    p.add_argument("-o", "--output", required=True, help="output video (.mp4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--frames", type=int, default=16, help="keyframes (default 16)")
    p.add_argument("--steps", type=int, help="sampler steps (default: the stage's, 20 for tiny)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale on the text (default: the stage's)")
    p.add_argument("--noise-prior", type=float, help="latent noise prior strength in [0, 1): how far the starting "
                   "noise leans toward the reference's latent (default: the stage's)")
    p.add_argument("--noise-prior-decay", type=float, help="in [0, 1]: how much of that lean is gone by the last "
                   "frame (0: every frame alike; default: the stage's)")
    p.add_argument("--appearance-scale", type=float, help="weight of the appearance encoder's cross-attention "
                   "(default: the stage's, 1; 0 turns it off)")
    p.add_argument("--motion-text-scale", type=float, help="weight of the motion modules' attention to the caption "
                   "(default: the stage's, 1; 0 turns it off; for a stage that has it)")
    p.add_argument("--motion-guidance", type=float, help="guidance away from the prompt's still version (its motion "
                   "words replaced by 'stays still'): more motion, a UNet pass more per step (default: the stage's)")
    p.add_argument("--negative-prompt", help="what guidance steers away from (default: the empty prompt)")
    p.add_argument("--no-controlnet", action="store_true", help="do not condition the frames on the reference RGB")
    p.add_argument("--controlnet-scale", type=float, help="weight of the ControlNet's residuals (default: the "
                   "stage's, 1)")
    p.add_argument("--size", type=int, help="keyframe side (default: the stage's, 64 tiny / 512 sd15)")
    p.add_argument("--preset", choices=("tiny", "sd15"), default="tiny")
    p.add_argument("--weights", help="tiny: a saved image-to-video stage folder (default: the shipped weights); "
                   "sd15: the weights folder (layout in the README)")
    _add_placement(p)
    p.add_argument("--flavour", choices=tuple(FLAVOURS), default="measure", help="measure (yuv444p) or web (yuv420p)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_i2v)

    p = sub.add_parser("v2v", help="stage 3: low-res keyframes become high-res frames (super-resolution)")
    p.add_argument("prompt")
    p.add_argument("input", help="the low-res keyframes (a video, 64x64 for tiny)")
    p.add_argument("--image", required=True, help="reference image (the one the keyframes were made from)")
    p.add_argument("-o", "--output", required=True, help="output video (.mp4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--strength", type=float, help="how much of the denoising schedule runs from the upsampled "
                   "input, in [0, 1] (default: the stage's; 0: upsample, VAE and back-projection only)")
    p.add_argument("--steps", type=int, help="sampler steps of the full schedule (default: the stage's, 20 for tiny)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale on the text (default: the stage's)")
    p.add_argument("--appearance-scale", type=float, help="weight of the appearance encoder's cross-attention "
                   "(default: the stage's, 1; 0 turns it off)")
    p.add_argument("--no-controlnet", action="store_true", help="no ControlNet (it reads the upsampled frames and "
                   "the reference)")
    p.add_argument("--back-projection", type=int, help="back-projection passes onto the input (default: the "
                   "stage's, 1; 0 turns it off)")
    p.add_argument("--back-projection-kernel", choices=("bicubic", "bilinear"), help="how back-projection upsamples "
                   "the error (default: the stage's; tiny: bilinear, steadier; bicubic: sharper, more flicker)")
    p.add_argument("--size", type=int, help="output side (default: the stage's, 128 tiny / 1024 sd15)")
    p.add_argument("--hold", type=float, help="keep the previous frame's detail where the input moved less than this "
                   "(0-1 units, 4/255 = 0.0157; default: the stage's; 0 turns it off): steadier backgrounds")
    p.add_argument("--preset", choices=("tiny", "sd15"), default="tiny")
    p.add_argument("--weights", help="tiny: a saved video-to-video stage folder (default: the shipped weights); "
                   "sd15: the weights folder (layout in the README)")
    p.add_argument("--i2v-weights", help="tiny: the image-to-video stage whose backbone it shares (default: shipped)")
    _add_placement(p)
    p.add_argument("--flavour", choices=tuple(FLAVOURS), default="measure", help="measure (yuv444p) or web (yuv420p)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_v2v)

    p = sub.add_parser("generate", help="the cascade: a prompt becomes a smooth video (t2i, i2v, v2v, vfi)")
    p.add_argument("prompt", nargs="?", help="what the video shows (not needed with --resume)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="run directory (default: runs/<prompt words>-seed<seed>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="finish an interrupted run; its finished stages are kept")
    p.add_argument("--image", help="animate this reference image instead of making one (skips t2i)")
    p.add_argument("--stages", help="comma-separated stages to run, in order, e.g. t2i,i2v to stop early "
                   "(default: t2i,i2v,v2v,vfi)")
    p.add_argument("--frames", type=int, default=16, help="keyframes (default 16: 46 frames after interpolation)")
    p.add_argument("--t2i-steps", type=int)
    p.add_argument("--t2i-guidance", type=float)
    p.add_argument("--i2v-steps", type=int)
    p.add_argument("--i2v-guidance", type=float)
    p.add_argument("--v2v-steps", type=int)
    p.add_argument("--v2v-strength", type=float)
    p.add_argument("--gif", action="store_true", help="also write final.gif")
    p.add_argument("--t2i-size", type=int, help="reference image side (default: the T2I model's)")
    p.add_argument("--i2v-size", type=int, help="keyframe side (default: the stage's, 64 tiny / 512 sd15)")
    p.add_argument("--v2v-size", type=int, help="output side (default: the stage's, 128 tiny / 1024 sd15)")
    p.add_argument("--preset", choices=("tiny", "sd15"), default="tiny")
    p.add_argument("--weights", help="tiny: a folder holding any of t2i/, i2v/, v2v/, vfi/ to use instead of the "
                   "shipped; sd15: the weights folder (layout in the README)")
    _add_placement(p)
    p.add_argument("--flavour", choices=tuple(FLAVOURS), default="web",
                   help="web (yuv420p, plays anywhere; default) or measure (yuv444p)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_generate)

    p = sub.add_parser("interpolate", help="insert frames between every two frames of a video")
    p.add_argument("input", help="a video file")
    p.add_argument("-o", "--output", required=True, help="output mp4")
    p.add_argument("--times", type=int, default=3, help="frame-rate factor: times - 1 new frames per gap (default 3)")
    p.add_argument("--model", choices=METHODS, default="ifnet",
                   help="interpolator (default ifnet, the best on real footage; edsc is trained on the "
                   "synthetic world and is far better there, see README)")
    p.add_argument("--weights", help="EDSC weights folder (default: the shipped tiny weights)")
    p.add_argument("--flavour", choices=tuple(FLAVOURS), default="measure", help="measure (yuv444p) or web (yuv420p)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_interpolate)

    p = sub.add_parser("random-weights", help="write a random-init weights folder at the sd15 preset's real shapes "
                       "(runs the full-size path with nothing downloaded; not a model)")
    p.add_argument("out", help="the folder to write (must be empty or new)")
    p.add_argument("--dtype", choices=("fp16", "fp32", "bf16"), default="fp16", help="stored precision (default fp16, "
                   "about 7 GB)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_random_weights)

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
    p.set_defaults(func=_extract_lora)

    p = sub.add_parser("train", help="train a stage (resumes when run again on the same --out)")
    p.add_argument("stage", choices=TRAINABLE)
    p.add_argument("--config", help="YAML config (default: the built-in defaults, as configs/train/<stage>_tiny.yaml)")
    p.add_argument("--out", required=True, help="run folder: checkpoints, cache, final weights")
    p.add_argument("--steps", type=int, help="override the config's steps")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)

    from magicvideo.study.cli import add_parser as add_study

    add_study(sub)
    return parser


def _one_line(err: object) -> str:
    """An error's message on one line (some libraries' messages span several)."""
    return " ".join(str(err).split())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.command in ("t2i", "i2v", "v2v", "generate", "random-weights", "train"):
        _quiet_libraries(args.quiet)
    try:
        args.func(args)
    except (MediaError, PromptError, ValueError, FileNotFoundError, FileExistsError) as err:
        # (StudyError is a ValueError)
        print(f"magicvideo {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except (OSError, SafetensorError) as err:  # a weights file missing or cut short, a full or read-only disk
        where = f" ({err.filename})" if getattr(err, "filename", None) else ""
        print(f"magicvideo {args.command}: error: {_one_line(err.strerror or err) if isinstance(err, OSError) else err}"
              f"{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"magicvideo {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
