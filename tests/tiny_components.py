"""Tiny random-init components in the real classes' layouts, built locally (nothing downloaded):
the fixtures for the full-size loading paths and for our own stages' plumbing."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer


def clip_tokenizer(folder: Path) -> CLIPTokenizer:
    """A CLIP tokenizer with no merges, saved to `folder`: every lower-case letter is a token."""
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    tokens = letters + [c + "</w>" for c in letters] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    tokenizer.save_pretrained(folder)
    return tokenizer


def clip_text_model(tokenizer: CLIPTokenizer, dim: int = 32) -> CLIPTextModel:
    torch.manual_seed(0)
    config = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=dim, intermediate_size=37, num_hidden_layers=2,
                            num_attention_heads=4, max_position_embeddings=77,
                            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id)
    return CLIPTextModel(config).eval()


def clip_image_encoder(dim: int = 32, projection_dim: int = 16):
    """A tiny CLIPVisionModelWithProjection (32x32 input, 8x8 patches)."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    config = CLIPVisionConfig(hidden_size=dim, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                              image_size=32, patch_size=8, projection_dim=projection_dim)
    return CLIPVisionModelWithProjection(config).eval()


def tiny_unet(cross_attention_dim: int, sample_size: int = 8, pooled: bool = False) -> UNet2DConditionModel:
    """pooled=True: the tiny 4x recipes' two extras, the prompt's sentence vector added to the
    timestep embedding (`time_cond_proj_dim`) and text-only attention at the outer level
    (`only_cross_attention`), which then has attention too."""
    torch.manual_seed(0)
    outer = "CrossAttnDownBlock2D" if pooled else "DownBlock2D"
    extras = dict(time_cond_proj_dim=cross_attention_dim, only_cross_attention=(True, False)) if pooled else {}
    unet = UNet2DConditionModel(
        sample_size=sample_size, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=(outer, "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", outer.replace("Down", "Up")),
        cross_attention_dim=cross_attention_dim, attention_head_dim=4, norm_num_groups=32, **extras)
    if pooled:  # large enough that the sentence vector visibly moves the output
        torch.nn.init.normal_(unet.time_embedding.cond_proj.weight, std=0.5)
    return unet


def tiny_vae(levels: int = 2) -> AutoencoderKL:
    """levels=4 gives SD1.5's 8x factor, 3 the tiny preset's 4x; 2 gives 2x, as diffusers' tests."""
    torch.manual_seed(0)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32,) * levels,
                         down_block_types=("DownEncoderBlock2D",) * levels,
                         up_block_types=("UpDecoderBlock2D",) * levels,
                         layers_per_block=1, norm_num_groups=32, sample_size=32)


def tiny_sd_pipeline(folder: Path) -> Path:
    """A random-init StableDiffusionPipeline saved to `folder`, as a user's local T2I model."""
    tokenizer = clip_tokenizer(folder / "_tok")
    pipe = StableDiffusionPipeline(
        vae=tiny_vae(), text_encoder=clip_text_model(tokenizer), tokenizer=tokenizer, unet=tiny_unet(32),
        scheduler=DDIMScheduler(clip_sample=False), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    pipe.save_pretrained(folder / "sd")
    return folder / "sd"


def tiny_i2v(text, appearance: bool = True, controlnet: bool = True, size: int = 32, pooled: bool = False):
    """A random-init image-to-video stage on `tiny_unet` (`pooled`: the 4x recipes' UNet): 3 frames
    at 32x32, 2 steps. Its motion module and ControlNet outputs are not zero (as they are before
    training), so both act."""
    from diffusers import MotionAdapter

    from magicvideo.diffusion.video import controlnet_from_unet
    from magicvideo.models.appearance import AppearanceEncoder
    from magicvideo.stages.i2v import I2VSettings, ImageToVideo

    unet = tiny_unet(text.dim, pooled=pooled)
    torch.manual_seed(1)
    adapter = MotionAdapter(block_out_channels=(32, 64), motion_layers_per_block=1, motion_num_attention_heads=2,
                            motion_norm_num_groups=32, use_motion_mid_block=False)
    for p in adapter.parameters():
        torch.nn.init.normal_(p, std=0.02)
    torch.manual_seed(2)
    enc = AppearanceEncoder(image_size=32, widths=(8, 16), grid=2, dim=text.dim) if appearance else None
    cn = (controlnet_from_unet(tiny_unet(text.dim, pooled=pooled), conditioning_embedding_out_channels=(8, 16, 16, 32))
          if controlnet else None)
    if cn is not None:
        for p in cn.controlnet_down_blocks.parameters():
            torch.nn.init.normal_(p, std=0.02)
    settings = I2VSettings(size=size, frames=3, steps=2, guidance=3.0)
    return ImageToVideo.inflate(unet, tiny_vae(levels=4), text, adapter, enc, cn, settings)


def tiny_v2v(i2v, controlnet: bool = True):
    """A random-init stage 3 on `i2v`: 32x32 frames in, 64x64 out, 2 steps from strength 0.5."""
    from diffusers import MotionAdapter

    from magicvideo.diffusion.video import controlnet_from_unet
    from magicvideo.stages.v2v import V2VSettings, VideoToVideo

    torch.manual_seed(5)
    adapter = MotionAdapter(block_out_channels=(32, 64), motion_layers_per_block=1, motion_num_attention_heads=2,
                            motion_norm_num_groups=32, use_motion_mid_block=False)
    for p in adapter.parameters():
        torch.nn.init.normal_(p, std=0.02)
    cn = None
    if controlnet:
        cn = controlnet_from_unet(i2v.spatial_unet(), conditioning_channels=6,
                                       conditioning_embedding_out_channels=(8, 16, 16, 32))
        # ControlNet zero-initialises its outputs and its input embedding's last layer
        for p in [*cn.controlnet_down_blocks.parameters(), *cn.controlnet_cond_embedding.conv_out.parameters()]:
            torch.nn.init.normal_(p, std=0.02)
    return VideoToVideo.attach(i2v, adapter, cn, V2VSettings(size=64, steps=2, strength=0.5))


def small_sd15_shapes():
    """The sd15 layout's classes at test size: what magicvideo.presets.sd15.write_random builds at full size."""
    from magicvideo.presets.sd15 import Shapes

    blocks = dict(block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                  up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"))
    return Shapes(
        unet=dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, cross_attention_dim=32,
                  attention_head_dim=4, norm_num_groups=32, **blocks),
        vae=dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32,) * 4,
                 down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                 layers_per_block=1, norm_num_groups=32, sample_size=32),
        text=dict(vocab_size=200, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                  max_position_embeddings=77),
        image=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=32,
                   patch_size=8, projection_dim=16),
        adapter=dict(block_out_channels=(32, 64), motion_layers_per_block=1, motion_num_attention_heads=2,
                     motion_norm_num_groups=32, use_motion_mid_block=False),
        control_embedding=(8, 16, 16, 32), appearance_tokens=2,
        i2v=dict(size=32, frames=3, steps=2, guidance=3.0), v2v=dict(size=64, steps=2, strength=0.5))


def rife_release(path: Path, seed: int = 0, **config):
    """A tiny Practical-RIFE 4.x file (models.rife4's IFNet4 of `config`), saved as RIFE's releases
    are: a torch pickle with DataParallel's `module.` keys. Its heads are scaled up so the flows
    span a few pixels and the warps matter. Returns the model."""
    from magicvideo.models.rife4 import IFNet4

    torch.manual_seed(seed)
    model = IFNet4(**config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lastconv" in name:
                p.mul_(10)
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, path)
    return model


# generate's flags for the quickest stages 1-2 run on a folder of small_sd15_shapes (with --weights, --out)
SD15_KEYFRAMES = ["--preset", "sd15", "--stages", "t2i,i2v", "--frames", "3", "--t2i-size", "32", "--t2i-steps", "1",
                  "--i2v-size", "32", "--i2v-steps", "1", "--device", "cpu", "--quiet"]


def animatediff_original(model) -> dict[str, torch.Tensor]:
    """A diffusers MotionAdapter's (or SparseControlNetModel's) weights under AnimateDiff's original
    key names (as in mm_sd_v15_v2.ckpt and v3_sd15_sparsectrl_rgb.ckpt: in the motion modules,
    `temporal_transformer`, `attention_blocks.N`, `norms.N`, `ff_norm`, and a `pos_encoder.pe`
    table in each attention block; every other key as diffusers names it)."""
    import re

    out = {}
    for key, value in model.state_dict().items():
        if "motion_modules." not in key:
            out[key] = value
            continue
        key = re.sub(r"(motion_modules\.\d+\.)", r"\1temporal_transformer.", key)
        if key.endswith("pos_embed.pe"):
            for i in (0, 1):
                out[key.replace("pos_embed.pe", f"attention_blocks.{i}.pos_encoder.pe")] = value.clone()
            continue
        out[key.replace(".norm1", ".norms.0").replace(".norm2", ".norms.1").replace(".norm3", ".ff_norm")
            .replace(".attn1", ".attention_blocks.0").replace(".attn2", ".attention_blocks.1")] = value
    return out


def kohya_lora(unet, text=None, rank: int = 4, alpha: float = 2.0, seed: int = 0) -> dict[str, torch.Tensor]:
    """A LoRA in kohya / A1111's key layout (`lora_unet_<module with _>.lora_down.weight`,
    `.lora_up.weight`, `.alpha`; `lora_te_text_model_...` for the CLIP text encoder) over every
    attention projection of `unet` and every attention and MLP layer of `text`."""
    g = torch.Generator().manual_seed(seed)
    out = {}

    def add(prefix: str, name: str, layer) -> None:
        key = prefix + name.replace(".", "_")
        out[key + ".lora_down.weight"] = torch.randn(rank, layer.in_features, generator=g) * 0.1
        out[key + ".lora_up.weight"] = torch.randn(layer.out_features, rank, generator=g) * 0.1
        out[key + ".alpha"] = torch.tensor(alpha)

    for name, layer in unet.named_modules():
        if "attentions" in name and name.endswith(("to_q", "to_k", "to_v", "to_out.0")):
            add("lora_unet_", name, layer)
    for name, layer in (text.named_modules() if text is not None else ()):
        if name.endswith(("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")):
            add("lora_te_text_model_", name.removeprefix("text_model."), layer)
    return out


def ip_adapter_weights(unet, embed_dim: int = 16, tokens: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """An IP-Adapter (ip-adapter_sd15 layout) for `unet`: `image_proj.proj` / `image_proj.norm`,
    and `ip_adapter.K.to_k_ip` / `.to_v_ip` for each cross-attention, K its index among all the
    UNet's attention processors in traversal order (as IP-Adapter numbers them)."""
    g = torch.Generator().manual_seed(seed)
    dim = unet.config.cross_attention_dim
    state = {"image_proj.proj.weight": torch.randn(tokens * dim, embed_dim, generator=g) * 0.1,
             "image_proj.proj.bias": torch.randn(tokens * dim, generator=g) * 0.1,
             "image_proj.norm.weight": 1 + torch.randn(dim, generator=g) * 0.1,
             "image_proj.norm.bias": torch.randn(dim, generator=g) * 0.1}
    for i, name in enumerate(unet.attn_processors):
        if name.endswith("attn2.processor"):
            attn = unet.get_submodule(name.removesuffix(".processor"))
            for kind in ("to_k_ip", "to_v_ip"):
                state[f"ip_adapter.{i}.{kind}.weight"] = torch.randn(attn.inner_dim, dim, generator=g) * 0.1
    return state


def ip_adapter_plus_weights(unet, embed_dim: int = 32, hidden: int = 64, tokens: int = 4,
                            seed: int = 0) -> dict[str, torch.Tensor]:
    """An IP-Adapter Plus (ip-adapter-plus_sd15 layout) for `unet`: the original resampler's keys
    (`image_proj.latents`, `proj_in`, four `layers.i` of attention `0.*` and feed-forward `1.*`,
    `proj_out`, `norm_out`; 64 channels a head) and the same `ip_adapter.K` image keys/values."""
    g = torch.Generator().manual_seed(seed)
    dim, inner = unet.config.cross_attention_dim, 64 * (hidden // 64)

    def w(*shape):
        return torch.randn(*shape, generator=g) * 0.1

    state = {"image_proj.latents": w(1, tokens, hidden), "image_proj.proj_in.weight": w(hidden, embed_dim),
             "image_proj.proj_in.bias": w(hidden), "image_proj.proj_out.weight": w(dim, hidden),
             "image_proj.proj_out.bias": w(dim), "image_proj.norm_out.weight": 1 + w(dim),
             "image_proj.norm_out.bias": w(dim)}
    for i in range(4):
        layer = f"image_proj.layers.{i}"
        for norm in ("0.norm1", "0.norm2", "1.0"):
            state[f"{layer}.{norm}.weight"], state[f"{layer}.{norm}.bias"] = 1 + w(hidden), w(hidden)
        state |= {f"{layer}.0.to_q.weight": w(inner, hidden), f"{layer}.0.to_kv.weight": w(2 * inner, hidden),
                  f"{layer}.0.to_out.weight": w(hidden, inner), f"{layer}.1.1.weight": w(4 * hidden, hidden),
                  f"{layer}.1.3.weight": w(hidden, 4 * hidden)}
    plain = ip_adapter_weights(unet, seed=seed)
    return state | {k: v for k, v in plain.items() if k.startswith("ip_adapter.")}


# ------------------------------------------------------------------ original (LDM) single files
_RESNET_TO_LDM = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("time_emb_proj", "emb_layers.1"),
                  ("norm2", "out_layers.0"), ("conv2", "out_layers.3"), ("conv_shortcut", "skip_connection"))


def _ldm_resnet(rest: str) -> str:
    for new, old in _RESNET_TO_LDM:
        if rest.startswith(new + "."):
            return old + rest[len(new):]
    return rest


def ldm_unet_state(state: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    """A diffusers UNet2DConditionModel's (or ControlNetModel's) weights under the original
    LDM / CompVis names (`input_blocks.N.0.in_layers.0`, `middle_block.1`, `output_blocks.N.1`, ...),
    as SD1.5 single files and ControlNet .pth files hold them: the inverse of diffusers'
    convert_ldm_unet_checkpoint and convert_controlnet_checkpoint."""
    import re

    per = config["layers_per_block"] + 1
    fixed = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
             "controlnet_mid_block": "middle_block_out.0", "controlnet_cond_embedding.conv_in": "input_hint_block.0",
             "controlnet_cond_embedding.conv_out": "input_hint_block.14"}
    up_has_attention = {i: any(k.startswith(f"up_blocks.{i}.attentions.") for k in state)
                        for i in range(len(config.get("up_block_types", ())))}
    out = {}
    for key, value in state.items():
        module, param = key.rsplit(".", 1)
        if module in fixed:
            out[f"{fixed[module]}.{param}"] = value
            continue
        if m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions|downsamplers)\.(\d+)\.(.+)", key):
            i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            if kind == "downsamplers":
                new = f"input_blocks.{1 + i * per + per - 1}.0.op.{rest.removeprefix('conv.')}"
            else:
                index = 1 + i * per + j
                new = f"input_blocks.{index}.0.{_ldm_resnet(rest)}" if kind == "resnets" else \
                    f"input_blocks.{index}.1.{rest}"
        elif m := re.fullmatch(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)", key):
            kind, j, rest = m[1], int(m[2]), m[3]
            new = f"middle_block.{2 * j}.{_ldm_resnet(rest)}" if kind == "resnets" else f"middle_block.1.{rest}"
        elif m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions|upsamplers)\.(\d+)\.(.+)", key):
            i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            if kind == "upsamplers":
                new = f"output_blocks.{i * per + per - 1}.{2 if up_has_attention[i] else 1}.{rest}"
            else:
                new = f"output_blocks.{i * per + j}.0.{_ldm_resnet(rest)}" if kind == "resnets" else \
                    f"output_blocks.{i * per + j}.1.{rest}"
        elif m := re.fullmatch(r"controlnet_down_blocks\.(\d+)\.(.+)", key):
            new = f"zero_convs.{m[1]}.0.{m[2]}"
        elif m := re.fullmatch(r"controlnet_cond_embedding\.blocks\.(\d+)\.(.+)", key):
            new = f"input_hint_block.{2 * (int(m[1]) + 1)}.{m[2]}"
        else:
            raise KeyError(f"no LDM name for {key}")
        out[new] = value
    return out


def ldm_vae_state(state: dict[str, torch.Tensor], levels: int) -> dict[str, torch.Tensor]:
    """A diffusers AutoencoderKL's weights under the LDM names (`encoder.down.N.block.M`,
    `mid.attn_1.q` as 1x1 convolutions, `decoder.up.N` numbered from the bottom)."""
    import re

    attention = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    out = {}
    for key, value in state.items():
        new = key.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
        new = re.sub(r"encoder\.down_blocks\.(\d+)\.resnets\.", r"encoder.down.\1.block.", new)
        new = re.sub(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", new)
        if m := re.match(r"decoder\.up_blocks\.(\d+)\.(resnets|upsamplers\.0)\.(.*)", new):
            block = levels - 1 - int(m[1])
            new = f"decoder.up.{block}.block.{m[3]}" if m[2] == "resnets" else f"decoder.up.{block}.upsample.{m[3]}"
        new = re.sub(r"mid_block\.resnets\.(\d)", lambda g: f"mid.block_{int(g[1]) + 1}", new)
        if m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)\.(weight|bias)", new):
            new = f"{m[1]}.mid.attn_1.{attention[m[2]]}.{m[3]}"
            if m[3] == "weight" and m[2] != "group_norm":
                value = value[:, :, None, None]  # LDM's attention projections are 1x1 convolutions
        out[new] = value
    return out


def sd15_single_file(pipe) -> dict[str, torch.Tensor]:
    """A StableDiffusionPipeline as one original-format checkpoint (the A1111 / civitai format):
    model.diffusion_model.*, first_stage_model.*, cond_stage_model.transformer.text_model.*."""
    unet = ldm_unet_state(pipe.unet.state_dict(), dict(pipe.unet.config))
    vae = ldm_vae_state(pipe.vae.state_dict(), len(pipe.vae.config.block_out_channels))
    text = {k.removeprefix("text_model."): v for k, v in pipe.text_encoder.state_dict().items()}
    return ({f"model.diffusion_model.{k}": v for k, v in unet.items()}
            | {f"first_stage_model.{k}": v for k, v in vae.items()}
            | {f"cond_stage_model.transformer.text_model.{k}": v for k, v in text.items()})
