"""Public checkpoint formats, read as a SD1.5 user has them, through diffusers' own converters
and always with a local config (never a hub call).

- Motion modules: a diffusers `MotionAdapter` folder, or AnimateDiff's original single file
  (`mm_sd_v15_v2.ckpt`, `v3_sd15_mm.ckpt`, or a .safetensors of the same keys). diffusers'
  `MotionAdapter.from_single_file` converts it; the config it needs is read off the file's own
  tensors (`motion_adapter_config`), so nothing is fetched.
- SD1.5 checkpoints and ControlNets in one original-format file (the A1111 / civitai format,
  `control_v11*.pth`): diffusers' `from_single_file`, with a diffusers folder's configs and
  tokenizer for the checkpoint (a single file holds neither) and a config built from the base
  UNet's for the ControlNet.
- IP-Adapter (`ip-adapter_sd15.safetensors`): converted to stage 2's appearance branch.
- LoRAs: kohya / A1111 files (`lora_unet_...`, `lora_te_...`) and diffusers / peft ones
  (`unet.` / `text_encoder.` keys), read by diffusers' `load_lora_weights`, which converts the
  former, and fused into the weights at the scale given (`FILE:SCALE`), so a LoRA costs nothing
  at sampling time.

Only tensors are read: safetensors, or `torch.load(weights_only=True)` for .ckpt/.pt/.pth/.bin.
"""

from __future__ import annotations

import copy
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from magicvideo.errors import WeightsError

SINGLE_FILE = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


def read_tensors(path: str | os.PathLike, mmap: bool = False) -> dict[str, torch.Tensor]:
    """A checkpoint file's tensors: safetensors, else a torch pickle read with weights_only (no
    code runs); a Lightning-style {"state_dict": ...} wrapper is opened, and one level of nested
    dicts (IP-Adapter's .bin: {"image_proj": {...}, "ip_adapter": {...}}) is flattened to dotted
    names, as its .safetensors has them. `mmap`: a pickle's tensors are mapped, not read (to look
    at names and dtypes)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file {path}")
    if path.suffix not in SINGLE_FILE:
        raise WeightsError(f"{path}: not a checkpoint file (expected one of {', '.join(SINGLE_FILE)})")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # a pickle holding code, or not a pickle at all
        raise WeightsError(f"{path}: not a tensors-only checkpoint ({' '.join(str(err).split()[:12])})") from err
    while isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if isinstance(state, dict):
        flat = {}
        for key, value in state.items():
            flat.update({f"{key}.{k}": v for k, v in value.items()} if isinstance(value, dict) else {key: value})
        state = flat
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: not a state dict of tensors")
    return state


# ------------------------------------------------------------------ motion modules
def motion_adapter_config(state: dict[str, torch.Tensor]) -> dict:
    """The MotionAdapter config of an original AnimateDiff motion-module state dict, read off its
    tensors: channels from each level's proj_in, the motion layers a level from its module
    indices, the frame limit from the positional table, the mid block from its keys. The number
    of heads is not in the weights: 8, as in every public SD1.5 module (v1, v2, v3)."""
    proj = re.compile(r"down_blocks\.(\d+)\.motion_modules\.(\d+)\.temporal_transformer\.proj_in\.weight")
    levels: dict[int, int] = {}
    layers: set[int] = set()
    for key, value in state.items():
        found = proj.fullmatch(key)
        if found:
            levels[int(found[1])] = value.shape[0]
            if found[1] == "0":
                layers.add(int(found[2]))
    tables = [v for k, v in state.items() if k.endswith("pos_encoder.pe")]
    blocks = {int(m[1]) for k in state if (m := re.search(r"temporal_transformer\.transformer_blocks\.(\d+)\.", k))}
    if not levels or not tables or sorted(levels) != list(range(len(levels))):
        raise WeightsError("not an AnimateDiff motion module (no down_blocks.N.motion_modules.M.temporal_transformer "
                           "weights with a pos_encoder table)")
    return {"block_out_channels": [levels[i] for i in range(len(levels))],
            "motion_layers_per_block": len(layers),
            "motion_transformer_layers_per_block": len(blocks),
            "motion_num_attention_heads": 8, "motion_norm_num_groups": 32,
            "motion_max_seq_length": int(tables[0].shape[1]),
            "use_motion_mid_block": any(k.startswith("mid_block.") for k in state)}


def load_motion_adapter(path: str | os.PathLike, torch_dtype: torch.dtype = torch.float32):
    """A MotionAdapter from a diffusers folder or an original AnimateDiff file."""
    from diffusers import MotionAdapter

    path = Path(path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is not a MotionAdapter folder (no config.json)")
        return MotionAdapter.from_pretrained(path, torch_dtype=torch_dtype, use_safetensors=True)
    state = read_tensors(path)
    config = motion_adapter_config(state)
    with tempfile.TemporaryDirectory() as folder:
        _save_config(MotionAdapter, config, folder)  # the local config from_single_file reads
        adapter = MotionAdapter.from_single_file(state, config=folder, local_files_only=True, torch_dtype=torch_dtype)
    return adapter


# ------------------------------------------------------------------ SD1.5 checkpoints and ControlNets
def load_single_file_pipeline(path: str | os.PathLike, config: str | os.PathLike | None = None):
    """A StableDiffusionPipeline from one original-format checkpoint (the A1111 / civitai format),
    by diffusers' `from_single_file`, in the file's own precision and with no safety checker.
    A single file holds no configs and no tokenizer: `config` is a diffusers SD1.5 folder to take
    them from; without it diffusers looks in the local Hugging Face cache only."""
    from diffusers import StableDiffusionPipeline

    path = Path(path)
    dtype = _first_dtype(path, "model.diffusion_model.")
    if dtype is None:
        raise WeightsError(f"{path} is not a Stable Diffusion checkpoint (no model.diffusion_model weights)")
    try:
        return StableDiffusionPipeline.from_single_file(str(path), config=str(config) if config else None,
                                                        local_files_only=True, torch_dtype=dtype,
                                                        safety_checker=None, requires_safety_checker=False)
    except (OSError, ValueError) as err:
        if config:
            raise WeightsError(f"{path} does not load with the configs of {config}: "
                               f"{' '.join(str(err).split())[:200]}") from err
        raise WeightsError(f"{path} holds no configs or tokenizer and none are cached here: give --config DIR, "
                           "any diffusers SD1.5 folder (its model_index.json, configs and tokenizer/)") from err


def _first_dtype(path: Path, prefix: str) -> torch.dtype | None:
    """The dtype of a checkpoint's first tensor under `prefix` (None: it has none), reading that
    tensor alone (diffusers reads the whole file after)."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(path, "pt") as f:
            key = next((k for k in f.keys() if k.startswith(prefix)), None)
            return f.get_tensor(key).dtype if key else None
    return next((v.dtype for k, v in read_tensors(path, mmap=True).items() if k.startswith(prefix)), None)


def load_controlnet(path: str | os.PathLike, unet_config: dict, torch_dtype: torch.dtype | None = None):
    """A ControlNetModel from a diffusers folder or an original single file (`control_v11p_sd15_*.pth`,
    `.safetensors`: `input_hint_block`, `zero_convs` ...), converted by diffusers' `from_single_file`
    with a config built from the base UNet's and the file's own conditioning layers; or from
    AnimateDiff's SparseCtrl file, a SparseControlNetModel (_sparse_controlnet)."""
    from accelerate import init_empty_weights
    from diffusers import ControlNetModel, UNet2DConditionModel

    path = Path(path)
    if path.is_dir():
        return ControlNetModel.from_pretrained(path, torch_dtype=torch_dtype, use_safetensors=True)
    state = read_tensors(path)
    if any(".controlnet_cond_embedding." in f".{k}" for k in state):  # AnimateDiff's SparseCtrl
        return _sparse_controlnet(path, state, unet_config, torch_dtype)
    prefix = "control_model." if any(k.startswith("control_model.") for k in state) else ""
    hint = {int(k.split(".")[1]): v for k, v in ((k.removeprefix(prefix), v) for k, v in state.items())
            if k.startswith("input_hint_block.") and k.endswith(".weight")}
    if not hint or 0 not in hint:
        raise WeightsError(f"{path} is not a ControlNet checkpoint (no input_hint_block weights)")
    # the conditioning embedding: conv_in (0), pairs of convolutions (2, 4, ...), conv_out (14); a width
    # change happens at 4k: those are its channels
    channels = tuple(hint[i].shape[0] for i in sorted(hint) if i % 4 == 0 and i < max(hint))
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(unet_config)
        config = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=channels,
                                           conditioning_channels=hint[0].shape[1], load_weights_from_unet=False).config
    with tempfile.TemporaryDirectory() as folder:
        _save_config(ControlNetModel, config, folder)
        return ControlNetModel.from_single_file(state, config=folder, local_files_only=True,
                                                torch_dtype=torch_dtype or hint[0].dtype)


def _sparse_controlnet(path: Path, state: dict, unet_config: dict, torch_dtype: torch.dtype | None):
    """AnimateDiff's SparseCtrl file (`v3_sd15_sparsectrl_rgb.ckpt`, `..._scribble.ckpt`) as diffusers'
    SparseControlNetModel, converted by its `from_single_file`. The file keeps no config: the
    base UNet's blocks, and from the tensors the condition embedding (RGB: a single conv on the
    reference's latent; scribble: a small CNN on its pixels) and the motion modules' length; their 8
    heads and the mask beside the condition are both public models' (AnimateDiff's configs)."""
    from accelerate import init_empty_weights
    from diffusers import SparseControlNetModel, UNet2DConditionModel

    state = {k.removeprefix("controlnet."): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    simple = "controlnet_cond_embedding.weight" in state
    first = state["controlnet_cond_embedding.weight" if simple else "controlnet_cond_embedding.conv_in.weight"]
    embedding = None
    if not simple:  # conv_in, pairs of blocks, conv_out: the widths the pairs step through
        blocks = sorted({int(k.split(".")[2]) for k in state if k.startswith("controlnet_cond_embedding.blocks.")})
        embedding = (first.shape[0],) + tuple(state[f"controlnet_cond_embedding.blocks.{i}.weight"].shape[0]
                                              for i in blocks[1::2])
    pe = next((v for k, v in state.items() if k.endswith("pos_encoder.pe")), None)
    with init_empty_weights():  # (from_unet rewrites the UNet config's block names in place: a copy of it)
        unet = UNet2DConditionModel.from_config(copy.deepcopy(unet_config))
        config = dict(SparseControlNetModel.from_unet(unet, conditioning_channels=first.shape[1] - 1,
                                                      conditioning_embedding_out_channels=embedding,
                                                      load_weights_from_unet=False).config)
    # (without its list of defaulted keys, which would make diffusers drop the values set here)
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    config |= {"use_simplified_condition_embedding": simple, "concat_conditioning_mask": True,
               "motion_num_attention_heads": 8, "motion_max_seq_length": pe.shape[1] if pe is not None else 32}
    with tempfile.TemporaryDirectory() as folder:
        _save_config(SparseControlNetModel, config, folder)
        try:
            return SparseControlNetModel.from_single_file(state, config=folder, local_files_only=True,
                                                          torch_dtype=torch_dtype or first.dtype)
        except (ValueError, RuntimeError) as err:
            why = " ".join(str(err).split())[:200]
            raise WeightsError(f"{path} is not a SparseCtrl checkpoint for this UNet ({why})") from None


def _save_config(cls, config, folder: str) -> None:
    """Write `config` as the config.json of `cls` in `folder` (what from_single_file reads)."""
    (Path(folder) / "config.json").write_text(json.dumps({"_class_name": cls.__name__, **dict(config)}))


# ------------------------------------------------------------------ LoRAs
@dataclass(frozen=True)
class LoraFile:
    path: Path
    scale: float = 1.0

    @classmethod
    def parse(cls, text: str) -> LoraFile:
        """`FILE` or `FILE:SCALE` (the scale a number; a path may itself hold colons)."""
        path, _, scale = text.rpartition(":")
        if path and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)", scale):
            return cls(Path(path), float(scale))
        return cls(Path(text))

    def __str__(self) -> str:
        """`FILE:SCALE` with the file's absolute path, as a run's manifest records it."""
        return f"{self.path.resolve()}:{self.scale:g}"

    def check(self) -> None:
        if not self.path.is_file():
            raise FileNotFoundError(f"no LoRA file {self.path}")
        if self.path.suffix not in SINGLE_FILE:
            raise WeightsError(f"{self.path}: not a LoRA file (expected .safetensors, or a tensors-only "
                               ".ckpt/.pt/.bin)")


def _layer_count(state: dict[str, torch.Tensor], prefix: str) -> int:
    """How many layers a LoRA state dict (as diffusers' lora_state_dict gives it) updates under
    `prefix` (unet, text_encoder): one down / A matrix each."""
    return sum(k.startswith(prefix + ".") and k.endswith(("down.weight", "lora_A.weight")) for k in state)


def _adapted(model, name: str) -> int:
    """How many of `model`'s layers carry LoRA `name`."""
    return 0 if model is None else sum(k.endswith(f"lora_A.{name}.weight") for k, _ in model.named_parameters())


def fuse_loras(host, loras: list[LoraFile] | tuple[LoraFile, ...]) -> None:
    """Load each LoRA into `host` (a diffusers pipeline, or a stage's parts in `lora_host`) with
    diffusers' `load_lora_weights`, check it fits, and fuse it at its scale; peft's layers are
    then removed. A LoRA whose layers the UNet or text encoder lacks (one for another
    architecture) is a one-line error, not a silent no-op."""
    from diffusers import StableDiffusionPipeline

    for i, lora in enumerate(loras):
        lora.check()
        raw = read_tensors(lora.path)  # read once; diffusers' converters pop from what they are given
        state, _ = StableDiffusionPipeline.lora_state_dict(dict(raw))
        wanted = {part: _layer_count(state, part) for part in ("unet", "text_encoder")}
        if not any(wanted.values()):
            raise WeightsError(f"{lora.path}: no LoRA weights for a UNet or text encoder in it")
        if wanted["text_encoder"] and not _is_clip(getattr(host, "text_encoder", None)):
            raise WeightsError(f"{lora.path} updates a CLIP text encoder, which this stage does not have")
        name = f"lora_{i}"
        try:
            host.load_lora_weights(dict(raw), adapter_name=name)
        except (ValueError, RuntimeError, KeyError) as err:  # peft: no target module, or a shape that differs
            why = " ".join(str(err).split())[:200]
            raise WeightsError(f"{lora.path} does not fit this stage's UNet: {why}") from err
        for part, count in wanted.items():
            got = _adapted(getattr(host, part), name)
            if got < count:
                raise WeightsError(f"{lora.path} does not fit this stage's {part}: {count - got} of its {count} "
                                   "layers are not in it")
        host.fuse_lora(lora_scale=lora.scale, adapter_names=[name])
    if loras:
        host.unload_lora_weights()  # the fused weights stay; peft's wrappers go


def _is_clip(model) -> bool:
    return model is not None and type(model).__name__.startswith("CLIPText")


def lora_host(unet, text_encoder=None):
    """An object diffusers' pipeline-level LoRA loading and fusing work on (`fuse_loras`), around
    a stage's bare UNet and, when it is CLIP, its text model: no pipeline is built."""
    from diffusers.loaders import StableDiffusionLoraLoaderMixin

    class Host(StableDiffusionLoraLoaderMixin):
        def __init__(self) -> None:
            self.unet, self.text_encoder = unet, text_encoder if _is_clip(text_encoder) else None
            self.hf_device_map = None  # what diffusers reads to see whether the parts are offloaded

        @property
        def components(self) -> dict:
            return {"unet": self.unet, "text_encoder": self.text_encoder}

    return Host()


# ------------------------------------------------------------------ RIFE
RIFE_FILE = "flownet"  # a weights folder's vfi/flownet.pkl (.pth, .safetensors): stage 4 interpolates with it
RIFE_SUFFIXES = (".pkl", ".pth", ".safetensors")


def folder_rife(folder: str | os.PathLike | None) -> Path | None:
    """The RIFE file a stage-4 folder holds (vfi/flownet.pkl ...), or None."""
    if folder is None:
        return None
    found = [Path(folder) / f"{RIFE_FILE}{s}" for s in RIFE_SUFFIXES if (Path(folder) / f"{RIFE_FILE}{s}").is_file()]
    return found[0] if found else None


# ------------------------------------------------------------------ IP-Adapter
def _resampler(path: Path, image_proj: dict, unet):
    """IP-Adapter Plus's resampler, converted by diffusers (its IPAdapterPlusImageProjection, which
    fixes 64 channels a head and 4 layers), in our AppearanceResampler."""
    from diffusers.loaders.unet import UNet2DConditionLoadersMixin

    from magicvideo.models.appearance import AppearanceResampler

    try:
        converted = UNet2DConditionLoadersMixin._convert_ip_adapter_image_proj_to_diffusers(
            unet, dict(image_proj), low_cpu_mem_usage=False)
    except (KeyError, RuntimeError) as err:
        raise WeightsError(f"{path}: an IP-Adapter Plus resampler diffusers does not read ({err})") from None
    r = converted
    resampler = AppearanceResampler(embed_dim=r.proj_in.in_features, num_tokens=r.latents.shape[1],
                                    dim=r.proj_out.out_features, hidden_dim=r.latents.shape[2],
                                    heads=r.layers[0].attn.heads, depth=len(r.layers),
                                    ffn_ratio=r.layers[0].ff[1].net[2].in_features / r.latents.shape[2])
    resampler.resampler.load_state_dict(converted.state_dict())
    return resampler


def ip_adapter_appearance(path: str | os.PathLike, unet_config: dict, out: str | os.PathLike) -> Path:
    """IP-Adapter's `ip-adapter_sd15.safetensors` (or .bin) as stage 2's appearance/ folder: its
    image projection is our AppearanceProjection (a linear layer to N tokens, then LayerNorm), or
    for IP-Adapter Plus (`ip-adapter-plus_sd15`, `ip-adapter-plus-face_sd15`) the resampler, which
    diffusers' own converter reads into its IPAdapterPlusImageProjection (our AppearanceResampler
    holds it); its image keys/values (`ip_adapter.K.to_k_ip`) go to the same cross-attentions. K counts
    every attention processor of the UNet in diffusers' traversal order (1, 3, ..., the mid
    block's last); our branch.safetensors orders the cross-attentions by name, so the map is read
    off a UNet built from `unet_config` (on the meta device: no memory), not assumed."""
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    from magicvideo.models.appearance import BRANCH_FILE, AppearanceProjection

    path, out = Path(path), Path(out)
    state = read_tensors(path)
    plus = "image_proj.latents" in state
    if not (plus or "image_proj.proj.weight" in state) or not any(k.startswith("ip_adapter.") for k in state):
        raise WeightsError(f"{path} is not an IP-Adapter file (no image_proj.proj and ip_adapter weights)")
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(unet_config)
    names = list(unet.attn_processors)
    cross = [(i, name) for i, name in enumerate(names) if name.endswith("attn2.processor")]
    ours = {name: j for j, name in enumerate(sorted(name for _, name in cross))}
    branch = {}
    for i, name in cross:
        for kind in ("to_k_ip", "to_v_ip"):
            key = f"ip_adapter.{i}.{kind}.weight"
            if key not in state:
                raise WeightsError(f"{path} does not fit this UNet: no {key} for {name.removesuffix('.processor')}")
            branch[f"{ours[name]}.{kind}.0.weight"] = state[key].contiguous()
    extra = sum(k.startswith("ip_adapter.") for k in state) - len(branch)
    if extra:
        raise WeightsError(f"{path} does not fit this UNet: {extra} of its image key/value weights have no "
                           "cross-attention here")
    image_proj = {k.removeprefix("image_proj."): v for k, v in state.items() if k.startswith("image_proj.")}
    if plus:
        projection = _resampler(path, image_proj, unet)
    else:
        dim = unet_config["cross_attention_dim"]
        weight = state["image_proj.proj.weight"]
        projection = AppearanceProjection(embed_dim=weight.shape[1], num_tokens=weight.shape[0] // dim, dim=dim)
        projection.load_state_dict(image_proj)
    projection.to(next(iter(image_proj.values())).dtype).save_pretrained(out)
    save_file(branch, out / BRANCH_FILE)
    return out
