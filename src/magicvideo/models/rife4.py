"""IFNet of Practical-RIFE 4.5 and later (hzwer/Practical-RIFE, MIT): the weights people
interpolate with today (4.6, 4.9, 4.22, 4.25, 4.26 and their lite and heavy variants), loaded from
a user's own `flownet.pkl` (or .pth / .safetensors) into our module.

What changed from 3.9 (models/ifnet.py), and what each release varies, read off the released
weights' layouts:
- each block's eight 3x3 convolutions are residual with a learned per-channel gain and a leaky
  ReLU (3.9: PReLU); its head upsamples with a transposed conv and a pixel shuffle;
- from 4.7 a small encoder gives both frames 4, 8 or 16 feature channels, warped with the flows
  and fed to every block (three encoder forms over the releases);
- from 4.21 every block also hands 8 channels of its own to the next;
- 4.25 and later have five blocks (1/16 to full size; the 4.25 lite one 1/32 to 1/4);
- up to 4.6 each block adds to the blending mask; from 4.7 it replaces it.
Everything but the last two points is in the tensors' shapes; those follow from them (features
present or not, the last block's width), so `from_file` builds the right network from the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from magicvideo.models.ifnet import IFNetOutput, _resize
from magicvideo.models.warp import backward_warp
from magicvideo.settings import FLOW_SCALES

ENCODERS = ("none", "two", "deep", "head")  # 4.5-4.6; 4.7-4.9; 4.10-4.13 lite; 4.13 on


def _conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.LeakyReLU(0.2))


class _Residual(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 1, 1)
        self.beta = nn.Parameter(torch.ones(1, c, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.conv(x) * self.beta + x, 0.2)


class _Block(nn.Module):
    """One scale: inputs at 1/scale (a quarter of that inside), out: flow (4), mask (1), and
    `outputs - 5` further channels (the features handed on, or one unused)."""

    def __init__(self, cin: int, width: int, outputs: int) -> None:
        super().__init__()
        self.conv0 = nn.Sequential(_conv(cin, width // 2, 2), _conv(width // 2, width, 2))
        self.convblock = nn.Sequential(*[_Residual(width) for _ in range(8)])
        self.lastconv = nn.Sequential(nn.ConvTranspose2d(width, 4 * outputs, 4, 2, 1), nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor, flow: torch.Tensor | None, scale: float):
        x = _resize(x, 1.0 / scale)
        if flow is not None:
            x = torch.cat((x, _resize(flow, 1.0 / scale) / scale), 1)
        out = _resize(self.lastconv(self.convblock(self.conv0(x))), scale)
        return out[:, :4] * scale, out[:, 4:5], out[:, 5:]


class _Head(nn.Module):
    """4.13 on: three convolutions and a transposed one, leaky ReLUs between."""

    def __init__(self, width: int, features: int) -> None:
        super().__init__()
        self.cnn0 = nn.Conv2d(3, width, 3, 2, 1)
        self.cnn1 = nn.Conv2d(width, width, 3, 1, 1)
        self.cnn2 = nn.Conv2d(width, width, 3, 1, 1)
        self.cnn3 = nn.ConvTranspose2d(width, features, 4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in (self.cnn0, self.cnn1, self.cnn2):
            x = F.leaky_relu(conv(x), 0.2)
        return self.cnn3(x)


def _encoder(kind: str, width: int, features: int) -> nn.Module | None:
    if kind == "none":
        return None
    if kind == "two":  # 4.7-4.9: no activation between the two
        return nn.Sequential(nn.Conv2d(3, width, 3, 2, 1), nn.ConvTranspose2d(width, features, 4, 2, 1))
    if kind == "deep":
        return nn.Sequential(nn.Conv2d(3, width, 3, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(width, width, 3, 1, 1),
                             nn.LeakyReLU(0.2), nn.Conv2d(width, width, 3, 1, 1), nn.LeakyReLU(0.2),
                             nn.ConvTranspose2d(width, features, 4, 2, 1))
    if kind == "head":
        return _Head(width, features)
    raise ValueError(f"unknown RIFE encoder {kind!r}; expected one of {ENCODERS}")


class IFNet4(ModelMixin, ConfigMixin):
    """Practical-RIFE 4.5+ IFNet; `forward(img0, img1, t, scale)` as models.ifnet.IFNet's."""

    @register_to_config
    def __init__(self, widths: tuple[int, ...] = (192, 128, 96, 64, 32),
                 scales: tuple[float, ...] = (16, 8, 4, 2, 1), encoder: str = "head", encoder_width: int = 16,
                 features: int = 4, outputs: int = 13, accumulate_mask: bool = False):
        super().__init__()
        if len(widths) != len(scales):
            raise ValueError("IFNet needs one scale per block")
        self.encode = _encoder(encoder, encoder_width, features)
        handed_on = self.handed_on
        for i, width in enumerate(widths):  # named as in the released files: block0, block1, ...
            cin = 7 + 2 * features if i == 0 else 12 + 2 * features + handed_on
            self.add_module(f"block{i}", _Block(cin, width, outputs))

    @property
    def handed_on(self) -> int:
        """Channels a block hands the next: 8 where its head makes 13 (4.21 on), else none (its
        head's fifth or sixth channel, where there is one, goes unused)."""
        return self.config.outputs - 5 if self.config.outputs > 6 else 0

    def forward(self, img0: torch.Tensor, img1: torch.Tensor, t: float | torch.Tensor = 0.5,
                scale: float = 1.0) -> IFNetOutput:
        if scale not in FLOW_SCALES:
            raise ValueError(f"IFNet's scale must be one of {', '.join(f'{s:g}' for s in FLOW_SCALES)}, got {scale:g}")
        c = self.config
        b, _, h, w = img0.shape
        scales = [s / scale for s in c.scales]
        multiple = max(int(4 * max(scales)), 4)  # as IFNet: each block divides by 4 s; the encoder by 2
        ph, pw = (-h) % multiple, (-w) % multiple
        img0, img1 = img0.clamp(0, 1), img1.clamp(0, 1)
        if ph or pw:
            img0 = F.pad(img0, (0, pw, 0, ph), mode="replicate")
            img1 = F.pad(img1, (0, pw, 0, ph), mode="replicate")
        t = torch.as_tensor(t, dtype=img0.dtype, device=img0.device).reshape(-1, 1, 1, 1)
        tmap = t.expand(b, 1, img0.shape[2], img0.shape[3])
        feat0 = feat1 = None
        if self.encode is not None:
            feat0, feat1 = self.encode(img0), self.encode(img1)
        blocks = [getattr(self, f"block{i}") for i in range(len(c.widths))]
        first = (img0, img1) + ((feat0, feat1) if feat0 is not None else ()) + (tmap,)
        flow, mask, carried = blocks[0](torch.cat(first, 1), None, scales[0])
        for block, s in zip(blocks[1:], scales[1:], strict=True):
            parts = [backward_warp(img0, flow[:, :2]), backward_warp(img1, flow[:, 2:])]
            if feat0 is not None:
                parts += [backward_warp(feat0, flow[:, :2]), backward_warp(feat1, flow[:, 2:])]
            parts += [tmap, mask] + ([carried] if self.handed_on else [])
            dflow, dmask, carried = block(torch.cat(parts, 1), flow, s)
            flow, mask = flow + dflow, (mask + dmask if c.accumulate_mask else dmask)
        warped0, warped1 = backward_warp(img0, flow[:, :2]), backward_warp(img1, flow[:, 2:])
        weight = torch.sigmoid(mask)
        frame = warped0 * weight + warped1 * (1 - weight)
        return IFNetOutput(frame[:, :, :h, :w].clamp(0, 1), flow[:, :, :h, :w], weight[:, :, :h, :w])

    @staticmethod
    def layout(state: dict[str, torch.Tensor]) -> dict:
        """The config of the network a released file's tensors describe (ValueError if none)."""
        blocks = sorted({int(k[5:].split(".")[0]) for k in state if k.startswith("block") and k[5].isdigit()})
        if not blocks or blocks != list(range(len(blocks))):
            raise ValueError("no RIFE IFNet blocks (block0, block1, ...) in the file")
        if "block0.convblock.0.beta" not in state:
            raise ValueError("RIFE weights older than 4.5 (no residual blocks): use 4.5 or later, or leave --rife "
                             "out for the bundled 3.9")
        widths = tuple(int(state[f"block{i}.conv0.1.0.weight"].shape[0]) for i in blocks)
        outputs = int(state["block0.lastconv.0.weight"].shape[1]) // 4
        # each encoder form by its first and last layer's names (a transposed conv's weight is (in, out, k, k))
        forms = {"head": ("encode.cnn0.weight", "encode.cnn3.weight"), "deep": ("encode.0.weight", "encode.6.weight"),
                 "two": ("encode.0.weight", "encode.1.weight")}
        encoder, width, features = "none", 16, 0
        for name, (first, last) in forms.items():
            if first in state and last in state:
                encoder, width, features = name, state[first].shape[0], state[last].shape[1]
                break
        handed_on = outputs - 5 if outputs > 6 else 0
        if len(widths) not in (4, 5):
            raise ValueError(f"a RIFE layout this version does not know ({len(widths)} blocks)")
        if len(widths) == 4:
            scales = (8, 4, 2, 1)
        else:  # five blocks: 4.25 lite (its last block 24 wide) ends at a quarter of the size
            scales = (32, 16, 8, 4, 1) if widths[-1] == 24 else (16, 8, 4, 2, 1)
        config = {"widths": widths, "scales": scales, "encoder": encoder, "encoder_width": int(width),
                  "features": int(features), "outputs": outputs, "accumulate_mask": features == 0}
        want = 7 + 2 * config["features"], 12 + 2 * config["features"] + handed_on
        got = [int(state[f"block{i}.conv0.0.0.weight"].shape[1]) for i in blocks]
        if got[0] != want[0] or any(g != want[1] for g in got[1:]):
            raise ValueError(f"a RIFE layout this version does not know (blocks take {got} channels)")
        return config

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> IFNet4:
        """The network of a released Practical-RIFE file (flownet.pkl, .pth or .safetensors),
        its weights loaded strictly (every tensor used, none missing)."""
        return cls._from_state(read_rife_state(path), path)

    @classmethod
    def _from_state(cls, state: dict[str, torch.Tensor], path: str | os.PathLike) -> IFNet4:
        model = cls(**cls.layout(state))
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"{path}: not a RIFE 4.x IFNet as this version reads it ({len(missing)} tensors "
                             f"missing, e.g. {missing[:1]}; {len(unexpected)} unexpected, e.g. {unexpected[:1]})")
        return model.eval()


def read_rife_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A RIFE weights file's tensors, keys without DataParallel's `module.`: a torch pickle read
    as tensors only (never code), or safetensors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no RIFE weights at {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        raw = load_file(path)
    else:
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # (pickle's errors have no common base)
            raise ValueError(f"{path} is not a RIFE weights file torch reads as tensors ({err})") from None
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise ValueError(f"{path} holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in raw.items()}


def load_rife(path: str | os.PathLike):
    """IFNet (3.9, models.ifnet) or IFNet4 (4.5+), whichever a released file holds."""
    from magicvideo.models.ifnet import IFNet

    state = read_rife_state(path)
    if "block0.convblock.0.beta" in state or "encode.cnn0.weight" in state:
        return IFNet4._from_state(state, path)
    return IFNet.from_state(state, path)
