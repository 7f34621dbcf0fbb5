"""The noise schedule our latent stages train on, the sampler they draw with, and seeded noise."""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler, DPMSolverMultistepScheduler, LCMScheduler


def noise_scheduler() -> DDPMScheduler:
    """The training noise schedule of our latent stages: cosine (squaredcos_cap_v2), whose last
    step is almost pure noise, so sampling starts where training ended; v-prediction, which
    stays well-posed at that end."""
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                         prediction_type="v_prediction", clip_sample=False)


def sampler(config: dict | None = None) -> DPMSolverMultistepScheduler:
    """DPM-Solver++ (2nd order) on a training schedule (default: ours; a full-size stage passes
    its weights' own, e.g. SD1.5's scaled-linear betas with epsilon prediction), with steps
    spaced from the last one."""
    return DPMSolverMultistepScheduler.from_config(config or noise_scheduler().config, algorithm_type="dpmsolver++",
                                                   solver_order=2, timestep_spacing="trailing",
                                                   final_sigmas_type="zero")


LCM_GRID = 50  # points of the DDIM grid consistency distillation trains on (LCM's: one step spans 20 timesteps)


def lcm_sampler(config: dict | None = None) -> LCMScheduler:
    """diffusers' LCMScheduler on a training schedule (default: ours), its steps taken from the
    LCM_GRID-point grid a consistency-distilled UNet was trained on (`magicvideo train distill`).
    A config of another sampler gives its training schedule; its own solver keys are left out."""
    config = {k: v for k, v in (config or noise_scheduler().config).items() if k not in _SOLVER_KEYS}
    return LCMScheduler.from_config(config, original_inference_steps=LCM_GRID)


# what sampler() adds to a training schedule's config, which LCMScheduler does not take
_SOLVER_KEYS = ("solver_order", "algorithm_type", "final_sigmas_type", "solver_type", "lower_order_final",
                "euler_at_final", "use_karras_sigmas", "use_lu_lambdas", "lambda_min_clipped",
                "variance_type", "use_exponential_sigmas", "use_beta_sigmas", "use_flow_sigmas", "flow_shift")


def renoise_generators(seeds: list[int]) -> list[torch.Generator]:
    """What LCM's re-noising between steps draws from: one generator per item, seeded one past its
    initial noise's, so an item's result does not depend on its batch."""
    return [torch.Generator().manual_seed(int(s) + 1) for s in seeds]


def initial_noise(seeds: list[int], shape: tuple[int, ...]) -> torch.Tensor:
    """One N(0, 1) tensor of `shape` per seed, each from its own generator: an item's noise does
    not depend on what else is in the batch."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds])


SEED_LIMIT = 2**63  # torch generators take a signed 64-bit seed


def seed_list(seed: int | list[int], n: int) -> list[int]:
    seeds = [seed] * n if isinstance(seed, int) else list(seed)
    if len(seeds) != n:
        raise ValueError(f"got {len(seeds)} seeds for {n} prompts")
    for s in seeds:
        check_seed(s)
    return seeds


def check_seed(seed: int) -> None:
    if not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"a seed is a whole number from 0 to 2^63 - 1, got {seed}")
