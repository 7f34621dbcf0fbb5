"""What the latent diffusion stages share: the schedule and sampler, seeded noise, guidance, and the
latent video engine of stages 2 and 3."""
