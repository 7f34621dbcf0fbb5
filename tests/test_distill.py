"""Few-step stages 1 and 2 (latent consistency distillation): the loss's fixed point at the
grid's first step, and the LoRA folders that load with the LCM sampler, seeded."""

import json
from pathlib import Path

import pytest
import torch

from magicvideo.diffusion.schedule import lcm_sampler
from magicvideo.errors import MagicVideoError
from magicvideo.presets import load_i2v, load_t2i
from magicvideo.settings import I2VSettings
from magicvideo.stages.i2v import lcm_plan
from magicvideo.stages.parts import part_name
from magicvideo.stages.t2i import TextToImage
from magicvideo.training.distill import DISTILLTrainConfig, consistency_loss, train_distill
from magicvideo.training.distill_i2v import DISTILL_I2VTrainConfig, train_distill_i2v
from tiny_components import tiny_unet


def _batch(n: int = 8, index: int | None = None, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(n, 4, 8, 8, generator=g)
    hidden, empty = torch.randn(n, 3, 16, generator=g), torch.zeros(n, 3, 16)
    grid = torch.full((n,), index) if index is not None else torch.randint(50, (n,), generator=g)
    return x0, torch.randn(n, 4, 8, 8, generator=g), hidden, empty, grid


def test_at_the_first_grid_step_the_teacher_itself_is_consistent():
    # t = 19 steps to 0, where the consistency function is the identity (c_skip 1, c_out 0): the
    # target is the teacher's own clean-latent estimate, which a student equal to it already gives
    teacher = tiny_unet(16)
    torch.nn.init.normal_(teacher.conv_out.weight, std=0.1)
    scheduler = lcm_sampler()
    c_skip, c_out = scheduler.get_scalings_for_boundary_condition_discrete(0)
    assert c_skip == 1 and c_out == 0
    first = consistency_loss(teacher, teacher, _batch(index=0), 1.0, 20, 0.001, scheduler).item()
    later = consistency_loss(teacher, teacher, _batch(index=30), 1.0, 20, 0.001, scheduler).item()
    other = tiny_unet(16)
    torch.nn.init.normal_(other.conv_out.weight, std=0.2)
    stranger = consistency_loss(other, teacher, _batch(index=0), 1.0, 20, 0.001, scheduler).item()
    # what is left at t = 19 is the step's own noise term (sqrt(1 - alpha_bar_0) eps), small
    assert first < 0.15 * later and first < 0.15 * stranger, (first, later, stranger)


def test_a_distilled_stage_is_a_lora_that_samples_in_few_steps(tmp_path):
    config = DISTILLTrainConfig(samples=4, batch_size=2, steps=2, warmup=1, lr=0.0, eval_prompts=0, lora=4)
    final = train_distill(config, tmp_path / "run", progress=False)
    over = json.loads((final / "config.json").read_text())
    assert over["settings"] == {"sampler": "lcm", "steps": 4, "guidance": 1.0}
    student, teacher = TextToImage.from_pretrained(final), load_t2i("tiny")
    assert (student.settings.sampler, student.settings.steps, student.settings.guidance) == ("lcm", 4, 1.0)
    for (key, a), b in zip(student.unet.state_dict().items(), teacher.unet.state_dict().values(), strict=True):
        assert torch.equal(a, b), key  # lr 0: the LoRA is zero, so the teacher's UNet exactly
    first = student("a red circle over a meadow", seed=3).images
    assert first.shape == (1, 3, 128, 128)
    assert torch.equal(first, student("a red circle over a meadow", seed=3).images)  # LCM's re-noising is seeded
    pair = student(["a red circle over a meadow", "a red circle over a meadow"], seed=[3, 4]).images
    assert torch.allclose(pair[0], first[0], atol=1e-5)  # an item's noise does not depend on its batch
    assert not torch.allclose(pair[1], first[0], atol=1e-3)
    with pytest.raises(FileNotFoundError, match="no cached latents"):
        train_distill(DISTILLTrainConfig(data=str(tmp_path / "none"), eval_prompts=0), tmp_path / "x", progress=False)


def test_a_distilled_i2v_stage_is_a_lora_over_the_stage_that_samples_in_few_steps(tmp_path):
    config = DISTILL_I2VTrainConfig(clips=2, batch_size=2, steps=2, warmup=1, lr=0.0, eval_clips=0, lora=4,
                                    sample_timesteps=(999, 499, 199, 59))
    final = train_distill_i2v(config, tmp_path / "run", progress=False)
    own = json.loads((final / "stage.json").read_text())
    assert {k: own[k] for k in ("sampler", "steps", "guidance", "lcm_timesteps")} == {
        "sampler": "lcm", "steps": 4, "guidance": 1.0, "lcm_timesteps": [999, 499, 199, 59]}
    assert Path(own["stage"]).is_absolute()  # the shipped stage is in another tree than tmp_path
    student, teacher = load_i2v("tiny", final), load_i2v("tiny")
    assert (student.settings.sampler, student.settings.steps, student.settings.guidance) == ("lcm", 4, 1.0)
    assert student.settings.noise_prior == teacher.settings.noise_prior  # the rest: the stage's own
    assert lcm_plan(student.settings) == [999, 499, 199, 59]
    assert lcm_plan(student.settings.merged(steps=3)) is None  # another count: LCM's own spacing
    # lr 0: the LoRA is zero, so the student's prediction is the teacher's (motion LoRA fused, not lost)
    x, t = torch.randn(1, 4, 16, 8, 8), torch.tensor(600)
    text = teacher.encode_prompt(["a red circle moves left over a meadow"]).hidden.repeat(16, 1, 1)
    ref = torch.rand(1, 3, 64, 64)
    tokens, control = teacher.appearance(ref).repeat_interleave(16, 0), ref.repeat_interleave(16, 0)
    with torch.no_grad():
        assert torch.allclose(student.predict(x, t, text, tokens, control),
                              teacher.predict(x, t, text, tokens, control), atol=1e-4)
    caption = "a red circle moves left over a meadow"
    first = student(caption, ref, seed=3, frames=4).frames
    assert first.shape == (1, 3, 4, 64, 64)
    assert torch.equal(first, student(caption, ref, seed=3, frames=4).frames)  # LCM's re-noising is seeded
    pair = student([caption, caption], ref, seed=[3, 4], frames=4).frames
    assert torch.allclose(pair[0], first[0], atol=1e-5)  # a clip's noise does not depend on its batch
    assert not torch.allclose(pair[1], first[0], atol=1e-3)
    with pytest.raises(FileNotFoundError, match="no cached clips"):
        train_distill_i2v(DISTILL_I2VTrainConfig(data=str(tmp_path / "none")), tmp_path / "x", progress=False)
    (final / "lora.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="holds no lora.safetensors"):
        load_i2v("tiny", final)


def test_a_folder_names_its_neighbours_relative_to_itself_and_strangers_absolutely(tmp_path):
    assert part_name(tmp_path / "runs" / "a" / "final", tmp_path / "weights" / "i2v") == "../../../weights/i2v"
    assert part_name(tmp_path / "lcm", tmp_path / "i2v") == "../i2v"
    assert part_name(tmp_path, "/") == "/"


@pytest.mark.parametrize("plan", [[], [999, 999], [499, 999], [1000, 10], [999, -1], [999.0, 10]])
def test_lcm_timesteps_are_checked_in_one_line(plan):
    with pytest.raises(MagicVideoError, match="lcm timesteps must be whole numbers from 999 down to 0"):
        I2VSettings.from_dict({"sampler": "lcm", "lcm_timesteps": plan})

