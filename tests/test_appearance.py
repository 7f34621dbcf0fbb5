import pytest
import torch
from diffusers import MotionAdapter, UNetMotionModel

from magicvideo.models.appearance import (
    AppearanceEncoder,
    appearance_processors,
    attach_appearance,
    detach_appearance,
    set_appearance_scale,
)
from tiny_components import tiny_unet


def test_encoder_tokens_and_any_input_size():
    enc = AppearanceEncoder(image_size=32, widths=(8, 16), grid=2, dim=24).eval()
    a = enc(torch.rand(2, 3, 32, 32))
    assert a.shape == (2, 4, 24) and enc.num_tokens == 4
    assert enc(torch.rand(1, 3, 64, 48)).shape == (1, 4, 24)
    half = enc.to(torch.bfloat16)  # a bf16 stage on the CPU, which has no bf16 antialiased resize
    assert half(torch.rand(1, 3, 64, 48, dtype=torch.bfloat16)).dtype == torch.bfloat16


def test_scale_zero_is_exactly_the_unet_without_the_image_branch():
    unet = tiny_unet(16).eval()
    x, t, text, img = torch.randn(2, 4, 8, 8), torch.tensor([5, 500]), torch.randn(2, 7, 16), torch.randn(2, 3, 16)
    with torch.no_grad():
        plain = unet(x, t, text).sample
        added = attach_appearance(unet, num_tokens=3, scale=0.0)
        assert len(added) == len(appearance_processors(unet)) > 0
        off = unet(x, t, (text, [img])).sample
        set_appearance_scale(unet, 1.0)
        on = unet(x, t, (text, [img])).sample
        detach_appearance(unet)
        back = unet(x, t, text).sample
    assert torch.equal(off, plain) and torch.equal(back, plain)
    assert not torch.allclose(on, plain)


def test_branch_attaches_to_a_motion_unet_and_round_trips(tmp_path):
    unet = tiny_unet(16)
    adapter = MotionAdapter(block_out_channels=(32, 64), motion_layers_per_block=1, motion_num_attention_heads=2,
                            motion_norm_num_groups=32, use_motion_mid_block=False)
    motion = UNetMotionModel.from_unet2d(unet, adapter).eval()
    attach_appearance(motion, num_tokens=3)
    with torch.no_grad():  # perturb the branch so a load that did nothing would show
        for p in appearance_processors(motion).parameters():
            p.add_(0.01 * torch.randn_like(p))
    x, text, img = torch.randn(1, 4, 5, 8, 8), torch.randn(5, 7, 16), torch.randn(5, 3, 16)
    with torch.no_grad():
        out = motion(x, torch.tensor([10]), (text, [img])).sample
    assert out.shape == x.shape
    torch.save(appearance_processors(motion).state_dict(), tmp_path / "branch.pt")
    fresh = UNetMotionModel.from_unet2d(tiny_unet(16), adapter).eval()
    attach_appearance(fresh, num_tokens=3)
    appearance_processors(fresh).load_state_dict(torch.load(tmp_path / "branch.pt", weights_only=True))
    with torch.no_grad():
        torch.testing.assert_close(fresh(x, torch.tensor([10]), (text, [img])).sample, out)


def test_scale_needs_a_branch():
    with pytest.raises(ValueError, match="attach_appearance"):
        set_appearance_scale(tiny_unet(16), 0.5)
