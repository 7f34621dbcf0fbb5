"""Where and how the big models run: device, precision and the memory controls users of the
full-size preset ask for. The tiny preset runs with the defaults (CPU, fp32, everything resident)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def process_state():
    """accelerate's state of this process (which of how many, on which device), made once. Why
    not plain PartialState(): accelerate joins CPU processes only when told the run is on the CPU
    (its own CPU launcher is mpirun), so processes that torchrun or `accelerate launch --multi_gpu`
    start on a machine with no GPU would each think they were alone; here they join one gloo
    group. ACCELERATE_USE_CPU=true forces the CPU where a GPU is."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.accelerator.is_available())


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class Placement:
    """device: where the models compute ("cpu", "cuda", "cuda:1", ...).
    dtype: fp32, fp16 or bf16 weights and activations (sampling arithmetic stays fp32).
    offload: model CPU offload; every model waits in CPU memory and is moved to `device` only
        while it runs (text encoder, image encoder, UNet + ControlNet, VAE, one after another).
    vae_chunk: frames per VAE encode/decode call (lower: less activation memory).
    vae_tiling: the VAE works on overlapping tiles (diffusers' tiling), for large frames.
    Attention is PyTorch's scaled_dot_product_attention everywhere (diffusers' 2.0 processors and
    our image branch on IPAdapterAttnProcessor2_0): memory-efficient kernels where the device has them."""

    device: str = "cpu"
    dtype: str = "fp32"
    offload: bool = False
    vae_chunk: int = 16
    vae_tiling: bool = False

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; expected one of {', '.join(DTYPES)}")
        if self.vae_chunk < 1:
            raise ValueError(f"vae_chunk must be at least 1, got {self.vae_chunk}")
        try:
            device = torch.device(self.device)
        except RuntimeError as err:
            raise ValueError(f"unknown device {self.device!r}") from err
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {self.device!r} asked for, but this PyTorch sees no CUDA GPU")

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]
