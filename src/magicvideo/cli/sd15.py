"""`magicvideo sd15 assemble`: the full-size weights folder from the public files a user has."""

from __future__ import annotations

import argparse
from pathlib import Path

from magicvideo.cli.common import add_lora, loras


def run_assemble(args: argparse.Namespace) -> None:
    from magicvideo.presets.assemble import Parts, assemble

    def path(value: str | None) -> Path | None:
        return Path(value) if value else None

    parts = Parts(base=Path(args.base), motion_adapter=Path(args.motion_adapter),
                  v2v_motion_adapter=path(args.v2v_motion_adapter), controlnet=path(args.controlnet),
                  v2v_controlnet=path(args.v2v_controlnet), ip_adapter=path(args.ip_adapter),
                  image_encoder=path(args.image_encoder), config=path(args.config), loras=loras(args),
                  rife=path(args.rife))
    for line in assemble(args.out, parts, copy=args.copy):
        print(line)
    print(f"wrote {args.out}: magicvideo generate PROMPT --preset sd15 --weights {args.out}")


def add_parsers(sub) -> None:
    group = sub.add_parser("sd15", help="the full-size preset's weights folder").add_subparsers(dest="sd15_command",
                                                                                                 required=True)
    p = group.add_parser("assemble", help="write the sd15 weights folder from a base model, an AnimateDiff motion "
                         "module and the optional parts, each a diffusers folder or its public single file")
    p.add_argument("out", help="the folder to write (new or empty)")
    p.add_argument("--base", required=True, help="an SD1.5-class model: a diffusers pipeline folder, or one "
                   "original-format checkpoint file (.safetensors / .ckpt, the A1111 / civitai format)")
    p.add_argument("--config", help="with a single-file --base: a diffusers SD1.5 folder to take its configs and "
                   "tokenizer from (default: the local Hugging Face cache, if it holds them)")
    p.add_argument("--motion-adapter", required=True, help="AnimateDiff's motion module: a diffusers MotionAdapter "
                   "folder or the original file (mm_sd_v15_v2.ckpt, v3_sd15_mm.ckpt, .safetensors)")
    p.add_argument("--v2v-motion-adapter", help="stage 3's own motion module (default: stage 2's)")
    p.add_argument("--controlnet", help="stage 2's ControlNet on the reference RGB, 3 input channels (e.g. "
                   "control_v11f1e_sd15_tile): a diffusers folder or the original .pth / .safetensors; default: none")
    p.add_argument("--v2v-controlnet", help="stage 3's ControlNet on frame + reference (6 channels), either format; "
                   "default: none")
    p.add_argument("--ip-adapter", help="stage 2's appearance encoder: ip-adapter_sd15.safetensors (or .bin)")
    p.add_argument("--image-encoder", help="with --ip-adapter: the CLIPVisionModelWithProjection folder it was "
                   "trained with (IP-Adapter's models/image_encoder)")
    p.add_argument("--rife", metavar="FILE", help="stage 4's interpolator: your RIFE weights (Practical-RIFE 4.5-4.26 "
                   "flownet.pkl, or 3.9) instead of the bundled 3.9")
    add_lora(p, "stages 1 and 2 whenever the folder loads")
    p.add_argument("--copy", action="store_true", help="copy the folders given instead of linking to them")
    p.set_defaults(func=run_assemble, quiet=False)
