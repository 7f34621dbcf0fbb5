"""The single-stage commands: t2i, i2v, v2v (our stages 1-3 alone) and interpolate (any video).
Each stage's flags are made from its Settings fields (magicvideo.settings), and checked by their
rules before any model loads."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from magicvideo.cli.common import (
    add_fit,
    add_lora,
    add_placement,
    check_frame_flags,
    check_size,
    fitted_image,
    loras,
    placement,
)
from magicvideo.errors import PromptError
from magicvideo.media import FLAVOURS
from magicvideo.presets import PRESETS
from magicvideo.settings import (
    I2VSettings,
    T2ISettings,
    V2VSettings,
    VFISettings,
    add_flags,
    check_flags,
    check_value,
    frame_size,
)
from magicvideo.stages.vfi import METHODS
from magicvideo.text import is_blank

# the settings each command takes as flags (named as the Settings fields, so the call takes them as given)
T2I_FLAGS = ("steps", "guidance", "size", "width", "height", "cache_interval")
I2V_FLAGS = ("frames", "steps", "guidance", "noise_prior", "noise_prior_decay", "appearance_scale",
             "motion_text_scale", "motion_guidance", "controlnet_scale", "size", "width", "height", "context_length",
             "context_stride", "cache_interval")
V2V_FLAGS = ("strength", "steps", "guidance", "appearance_scale", "back_projection", "back_projection_kernel", "size",
             "width", "height", "hold_threshold", "context_length", "context_stride",
             "cache_interval")
VFI_FLAGS = ("times", "batch_size", "scene_cut", "flow_scale")


def run_t2i(args: argparse.Namespace) -> None:
    from magicvideo.media import write_image
    from magicvideo.presets import load_t2i

    if is_blank(args.prompt):
        raise PromptError("the prompt is empty")
    if Path(args.output).suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
        raise ValueError(f"-o must name a .png, .jpg or .webp file, got {args.output}")
    values = check_flags(args, T2ISettings, T2I_FLAGS)  # the size's multiple is its VAE's, checked once loaded
    stage = load_t2i(args.preset, args.weights, placement(args), loras(args))
    out = stage(args.prompt, seed=args.seed, progress=not args.quiet, **values)
    if any(out.flagged):
        print("note: the pipeline's safety checker flagged the image and blacked it out", file=sys.stderr)
    print(f"wrote {write_image(args.output, out.images[0])}")


def check_prompt_and_video(args: argparse.Namespace) -> None:
    """What i2v and v2v both need of their arguments: a prompt, and a video file to write."""
    from magicvideo.media import VIDEO_SUFFIXES

    if args.prompt is None or is_blank(args.prompt):
        raise PromptError("the prompt is empty")
    if Path(args.output).suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"-o must name a video file ({', '.join(VIDEO_SUFFIXES)}), got {args.output}")


def run_i2v(args: argparse.Namespace) -> None:
    from magicvideo.media import write_video
    from magicvideo.presets import load_i2v
    from magicvideo.travel import PromptSchedule

    schedule = None
    if args.prompt_schedule:
        if args.prompt is not None:
            raise ValueError("give a prompt or --prompt-schedule, not both")
        schedule = PromptSchedule.parse(args.prompt_schedule)
        args.prompt = schedule.prompts[0]
    check_prompt_and_video(args)
    values = check_flags(args, I2VSettings, I2V_FLAGS)
    if args.motion_guidance and args.still_prompt is None:
        raise ValueError("--motion-guidance contrasts the prompt with its still version: give --still-prompt, the "
                         "same words with the motion said as none (e.g. 'a dog stands on a lawn')")
    if args.still_prompt is not None and is_blank(args.still_prompt):
        raise PromptError("the still prompt is empty")
    if args.negative_prompt is not None and is_blank(args.negative_prompt):
        raise PromptError("the negative prompt is empty (leave --negative-prompt out for the default)")
    check_frame_flags(args)
    image = fitted_image(args, args.height or 1, args.width or 1)  # an unreadable image fails before models load
    check_size(args)
    stage = load_i2v(args.preset, args.weights, placement(args), loras(args))
    values.setdefault("size", args.size or stage.settings.size)
    height, width = frame_size(dataclasses.replace(stage.settings, **values))
    stage.check_frame(height, width)
    frames = stage(schedule or args.prompt, image, seed=args.seed, progress=not args.quiet,
                   use_controlnet=not args.no_controlnet,
                   negative_prompt=args.negative_prompt, still_prompt=args.still_prompt,
                   **values).frames[0]
    fps = stage.settings.fps
    write_video(args.output, frames, fps, args.flavour)
    print(f"wrote {frames.shape[1]} keyframes at {width}x{height}, {fps:g} fps: {args.output}")


def run_v2v(args: argparse.Namespace) -> None:
    from magicvideo.media import read_image, read_video, write_video
    from magicvideo.presets import load_i2v, load_v2v, v2v_folder

    check_prompt_and_video(args)
    check_frame_flags(args)
    values = check_flags(args, V2VSettings, V2V_FLAGS)
    video, fps = read_video(args.input)  # unreadable inputs fail before any model loads
    image = read_image(args.image)
    check_value(I2VSettings, "frames", video.shape[1], "the input's frame count")  # the motion module's length
    check_size(args)
    if args.preset == "sd15":
        v2v_folder("sd15", args.weights)  # checked before anything loads
        stage = load_v2v("sd15", args.weights, i2v=load_i2v("sd15", args.weights, placement(args)))
    else:
        folder = v2v_folder(args.preset, args.weights)
        stage = load_v2v(args.preset, folder, i2v=load_i2v(args.preset, args.i2v_weights, placement(args)))
    size = args.size or stage.settings.size
    h, w = video.shape[-2:]
    if args.width is None and h != w:  # the input's shape, its longer side the stage's size
        values.update(height=h * size // max(h, w), width=w * size // max(h, w))
    height, width = frame_size(dataclasses.replace(stage.settings, **dict(values, size=size)))
    stage.check_frame(height, width)
    if h > height or w > width or h * width != w * height:
        raise ValueError(f"the input frames are {w}x{h}; expected frames of {width}x{height}'s shape and at most "
                         "that size")
    frames = stage(args.prompt, video, image, seed=args.seed, use_controlnet=not args.no_controlnet,
                   progress=not args.quiet, **dict(values, size=size)).frames[0]
    write_video(args.output, frames, fps, args.flavour)
    print(f"wrote {frames.shape[1]} frames at {width}x{height}, {fps:g} fps: {args.output}")


def run_interpolate(args: argparse.Namespace) -> None:
    from fractions import Fraction

    from tqdm import tqdm

    from magicvideo.device import Placement, default_device
    from magicvideo.media import check_output, open_video, video_writer
    from magicvideo.presets import load_vfi
    from magicvideo.presets.tiny import TINY_EDSC_NATURAL
    from magicvideo.stages.vfi import output_frames

    values = check_flags(args, VFISettings, VFI_FLAGS)
    if args.fps is not None and "times" in values:
        raise ValueError("give --times or --fps, not both")
    if args.fps is not None and not 0 < args.fps <= 1000:
        raise ValueError(f"--fps must be in (0, 1000], got {args.fps}")
    if args.no_scene_detect:
        values["scene_cut"] = 0.0
    info, frames = open_video(args.input)  # a bad file fails before any model loads
    if args.fps is not None and not info.fps:
        raise ValueError(f"{args.input} does not say its frame rate; give --times instead of --fps")
    check_output(args.output, info.width, info.height, args.flavour)
    device = args.device or default_device()
    if args.dtype == "fp16" and not device.startswith("cuda"):
        raise ValueError("--dtype fp16 needs a GPU; on the CPU use bf16 or fp32")
    # footage is not the world: its EDSC head is the one trained on photographs under camera motion too
    weights = args.weights or (TINY_EDSC_NATURAL if args.model == "edsc" else None)
    interpolator = load_vfi(args.model, weights, Placement(device=device, dtype=args.dtype), args.rife)
    in_fps = info.fps or 8.0
    if args.fps is not None:  # output frames per input frame, exact for rates such as 30000/1001
        rate = Fraction(args.fps).limit_denominator(1001) / Fraction(in_fps).limit_denominator(1001)
        fps = args.fps
    else:
        rate = Fraction(values.pop("times", interpolator.settings.times))
        fps = in_fps * float(rate)
    sound = args.input if info.audio and not args.no_audio else None
    total = output_frames(info.frames, rate) if info.frames else None
    count = 0
    # decoded, interpolated and encoded a few frames at a time: memory does not grow with length
    with video_writer(args.output, fps, info.width, info.height, args.flavour, audio_from=sound) as write:
        for frame in tqdm(interpolator.stream(frames, rate=rate, **values), total=total, unit="frame",
                          desc=f"interpolate ({args.model})", disable=args.quiet):
            write(frame)
            count += 1
    print(f"{info.fps:g} fps -> {count} frames at {fps:g} fps{' with its sound' if sound else ''}: {args.output}")


def add_parsers(sub) -> None:
    p = sub.add_parser("t2i", help="stage 1: a prompt becomes a reference image")
    p.add_argument("prompt")
    p.add_argument("-o", "--output", required=True, help="output image (.png)")
    p.add_argument("--seed", type=int, default=0)
    add_flags(p, T2ISettings, T2I_FLAGS)
    p.add_argument("--preset", choices=PRESETS, default="tiny")
    p.add_argument("--weights", help="tiny: a saved stage folder (default: shipped weights); "
                   "sd15: a local diffusers text-to-image pipeline folder")
    add_lora(p, "the UNet and text encoder")
    add_placement(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_t2i)

    p = sub.add_parser("i2v", help="stage 2: a prompt and a reference image become low-res keyframes")
    p.add_argument("prompt", nargs="?", help="what the keyframes show (or --prompt-schedule)")
    p.add_argument("--prompt-schedule", metavar="SCHEDULE", help="prompt travel instead of one prompt: "
                   "'0: a red star moving left | 12: a red star spinning' (or a .json file of frame: prompt)")
    p.add_argument("--image", required=True, help="reference image (resized to the stage's size, 64x64 for tiny)")
    add_fit(p)
    p.add_argument("-o", "--output", required=True, help="output video (.mp4)")
    p.add_argument("--seed", type=int, default=0)
    add_flags(p, I2VSettings, I2V_FLAGS)
    p.add_argument("--still-prompt", help="with --motion-guidance: the prompt with its motion said as none, e.g. "
                   "'a red star stays still over a beach' for 'a red star moves left over a beach'")
    p.add_argument("--negative-prompt", help="what guidance steers away from (default: the empty prompt)")
    p.add_argument("--no-controlnet", action="store_true", help="do not condition the frames on the reference RGB")
    p.add_argument("--preset", choices=PRESETS, default="tiny")
    p.add_argument("--weights", help="tiny: a saved image-to-video stage folder (default: the shipped weights); "
                   "sd15: the weights folder (layout in docs/sd15.md)")
    add_lora(p, "the spatial UNet and text encoder")
    add_placement(p)
    p.add_argument("--flavour", choices=tuple(FLAVOURS), default="measure", help="measure (yuv444p) or web (yuv420p)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_i2v)

    p = sub.add_parser("v2v", help="stage 3: low-res keyframes become high-res frames (super-resolution)")
    p.add_argument("prompt")
    p.add_argument("input", help="the low-res keyframes (a video, 64x64 for tiny)")
    p.add_argument("--image", required=True, help="reference image (the one the keyframes were made from)")
    p.add_argument("-o", "--output", required=True, help="output video (.mp4)")
    p.add_argument("--seed", type=int, default=0)
    add_flags(p, V2VSettings, V2V_FLAGS)
    p.add_argument("--no-controlnet", action="store_true", help="no ControlNet (it reads the upsampled frames and "
                   "the reference)")
    p.add_argument("--preset", choices=PRESETS, default="tiny")
    p.add_argument("--weights", help="tiny: a saved video-to-video stage folder (default: the shipped weights); "
                   "sd15: the weights folder (layout in docs/sd15.md)")
    p.add_argument("--i2v-weights", help="tiny: the image-to-video stage whose backbone it shares (default: shipped)")
    add_placement(p)
    p.add_argument("--flavour", choices=tuple(FLAVOURS), default="measure", help="measure (yuv444p) or web (yuv420p)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_v2v)

    p = sub.add_parser("interpolate", help="insert frames between every two frames of a video")
    p.add_argument("input", help="a video file")
    p.add_argument("-o", "--output", required=True, help="output: .mp4, .mov, .mkv, .webm, .gif, or a folder for PNGs")
    add_flags(p, VFISettings, VFI_FLAGS, what=None)
    p.add_argument("--fps", type=float, help="the output's frame rate, any (e.g. 60 from 24), instead of --times; "
                   "the video keeps its duration")
    p.add_argument("--no-scene-detect", action="store_true", help="interpolate across scene cuts too "
                   "(--scene-cut 0)")
    p.add_argument("--model", choices=METHODS, default="ifnet",
                   help="interpolator (default ifnet, fast; edsc: an EDSC head over IFNet trained on the "
                   "synthetic world and on photographs under camera motion, 2.5 dB above IFNet on natural "
                   "motion and 5x slower, see docs/vfi.md)")
    p.add_argument("--weights", help="EDSC weights folder (default: the shipped vfi_edsc_natural)")
    p.add_argument("--rife", metavar="FILE", help="with --model ifnet: your own RIFE weights (Practical-RIFE 4.5 "
                   "to 4.26, lite and heavy too, or 3.9: flownet.pkl, .pth or .safetensors) instead of the bundled 3.9")
    p.add_argument("--flavour", choices=tuple(FLAVOURS), default="web", help="web (yuv420p: plays in every browser; "
                   "the default) or measure (yuv444p, near-lossless)")
    p.add_argument("--no-audio", action="store_true", help="leave the input's sound out (default: kept)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when there is one, else cpu)")
    p.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32", help="the models' precision: fp16 "
                   "or bf16 halve memory and time on a GPU (bf16 also runs on the CPU); the warps stay fp32")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_interpolate)
