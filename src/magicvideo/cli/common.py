"""What several commands share: where models run (device, dtype, memory controls) and the size check."""

from __future__ import annotations

import argparse

from magicvideo.device import Placement


def add_placement(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when there is one, else cpu)")
    p.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), help="weights' precision (default: fp16 on a GPU, "
                   "fp32 on the CPU)")
    p.add_argument("--offload", action="store_true", help="model CPU offload: each model goes to the device only "
                   "while it runs (less GPU memory, slower)")
    p.add_argument("--vae-chunk", type=int, default=16, help="frames per VAE call (default 16; lower: less memory)")
    p.add_argument("--vae-tiling", action="store_true", help="the VAE works in tiles (large frames, less memory)")


def placement(args: argparse.Namespace) -> Placement:
    from magicvideo.device import default_device

    device = args.device or default_device()
    dtype = args.dtype or ("fp16" if device.startswith("cuda") else "fp32")
    return Placement(device=device, dtype=dtype, offload=args.offload, vae_chunk=args.vae_chunk,
                     vae_tiling=args.vae_tiling)


def check_size(args: argparse.Namespace) -> None:
    """--size of the i2v and v2v commands, checked before loading where the configs tell enough."""
    # (positive: its setting's rule; the tiny stages' multiple is checked once they are loaded)
    if args.size is not None and args.preset == "sd15":
        from magicvideo.presets import size_multiple_of

        multiple = size_multiple_of("sd15", args.weights)
        if args.size % multiple:
            raise ValueError(f"--size must be a multiple of {multiple} for this UNet, got {args.size}")


def add_lora(p: argparse.ArgumentParser, where: str) -> None:
    p.add_argument("--lora", action="append", default=[], metavar="FILE[:SCALE]",
                   help=f"a LoRA fused into {where} at SCALE (default 1): kohya / A1111 or diffusers "
                   ".safetensors; repeat for several")


def loras(args: argparse.Namespace) -> list:
    """The --lora files, parsed and checked (they exist and are weight files) before any model loads."""
    from magicvideo.formats import LoraFile

    files = [LoraFile.parse(text) for text in args.lora]
    for lora in files:
        lora.check()
    return files


def check_frame_flags(args: argparse.Namespace) -> None:
    """--width and --height come together (or neither, for the square size)."""
    if (args.width is None) != (args.height is None):
        raise ValueError("give --width and --height together (or neither, for a square size)")


def add_fit(p: argparse.ArgumentParser) -> None:
    from magicvideo.media import FITS

    p.add_argument("--fit", choices=FITS, default="crop", help="how a reference image of another shape than the "
                   "frames takes theirs: crop (its centre part; default), pad (letterboxed on black) or stretch")


def fitted_image(args: argparse.Namespace, height: int = 1, width: int = 1):
    """The --image, read (an unreadable file fails here, before any model loads) and given the
    aspect of height x width frames (default square) by --fit, saying so when that changed it."""
    import sys

    from magicvideo.media import fit_shape, read_image

    image = read_image(args.image)
    h, w = image.shape[-2:]
    if h * width != w * height:
        done = {"crop": "cropped to", "pad": "padded on black to", "stretch": "stretched to"}[args.fit]
        shape = "a square" if height == width else f"the frames' {width}:{height}"
        print(f"note: the reference image is {w}x{h}; {done} {shape} (--fit)", file=sys.stderr)
    return fit_shape(image, height, width, args.fit)
