"""Data-parallel training under `accelerate launch`: a config's batch is the global one, each
process trains on its share, so two processes reach the weights one process does (to float
tolerance), and a two-process run killed mid-run resumes under one."""

import os
import socket
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from magicvideo.training.loop import shard
from magicvideo.training.t2i import T2ITrainConfig, train_t2i
from tiny_components import tiny_vae

ACCELERATE = Path(__file__).parents[1] / "configs" / "accelerate"
CPU_CONFIG = ACCELERATE / "cpu_2_processes.yaml"


def test_shard_cuts_every_tensor_of_a_batch_in_equal_parts():
    batch = {"x": torch.arange(8).view(4, 2), "parts": (torch.arange(4), None), "name": "a"}
    first, second = shard(batch, 0, 2), shard(batch, 1, 2)
    assert first["x"].tolist() == [[0, 1], [2, 3]] and second["x"].tolist() == [[4, 5], [6, 7]]
    assert second["parts"][0].tolist() == [2, 3] and second["parts"][1] is None and second["name"] == "a"
    assert shard(batch, 0, 1) is batch
    with pytest.raises(ValueError, match="does not split evenly over 2 processes"):
        shard(torch.ones(3), 0, 2)


def _config(tmp_path, steps: int) -> T2ITrainConfig:
    if not (tmp_path / "vae").is_dir():
        tiny_vae(levels=3).save_pretrained(tmp_path / "vae")
    return T2ITrainConfig(samples=8, size=32, vae=str(tmp_path / "vae"), batch_size=4, steps=steps, warmup=1,
                          checkpoint_every=1, lr=1e-3, widths=(32, 64), head_dim=16, eval_prompts=0,
                          object_weight=5.0)


def _launch(tmp_path, stage: str, config, out, processes: int, wait: bool = True):
    path = tmp_path / f"{stage}_{config.steps}.yaml"
    path.write_text(yaml.safe_dump(asdict(config)))
    with socket.socket() as s:  # a free port for the processes to meet on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # the shipped config for CPU processes (torchrun's, joined in one gloo group: device.process_state)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--quiet", "--config_file", str(CPU_CONFIG),
               "--num_processes", str(processes), "--main_process_port", str(port), "-m", "magicvideo.cli",
               "train", stage, "--config", str(path), "--out", str(out), "--quiet"]
    # gloo on the loopback interface: a test machine's hostname need not resolve
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true", "GLOO_SOCKET_IFNAME": "lo"}
    if not wait:
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)


def _weights(folder) -> torch.Tensor:
    """Every weight a trainer saved in `folder` (a stage's folder holds several files), in one vector."""
    parts = []
    for path in sorted(folder.rglob("*.safetensors")):
        state = load_file(path)
        parts += [state[k].flatten().float() for k in sorted(state)]
    return torch.cat(parts)


def _apart(a: torch.Tensor, b: torch.Tensor, start: torch.Tensor) -> float:
    """How far two runs' weights are, as a share of how far training moved them."""
    return float((a - b).abs().mean() / (a - start).abs().mean())


def test_two_processes_train_the_weights_one_does_and_resume_under_one(tmp_path):
    two = _launch(tmp_path, "t2i", _config(tmp_path, 2), tmp_path / "two", 2)
    assert two.returncode == 0, two.stderr[-2000:]
    assert two.stdout.count("trained weights:") == 1  # the main process alone reports (and writes)
    one = train_t2i(_config(tmp_path, 2), tmp_path / "one", progress=False)
    start = train_t2i(_config(tmp_path, 0), tmp_path / "start", progress=False)
    # the check can fail: one process at half the batch sees other data and lands elsewhere
    half = train_t2i(replace(_config(tmp_path, 2), batch_size=2), tmp_path / "half", progress=False)
    w_start, w_one = _weights(start), _weights(one)
    assert _apart(_weights(tmp_path / "two" / "final"), w_one, w_start) < 0.01
    assert _apart(_weights(half), w_one, w_start) > 0.2


def test_a_two_process_run_killed_resumes_under_one_process(tmp_path):
    killed = tmp_path / "killed"
    run = _launch(tmp_path, "t2i", _config(tmp_path, 10_000), killed, 2, wait=False)
    deadline = time.monotonic() + 240
    while (step := _checkpoint_step(killed)) < 2:
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()[1][-2000:]
        time.sleep(0.2)
    import psutil

    launcher = psutil.Process(run.pid)
    processes = [*launcher.children(recursive=True), launcher]  # both trainers, mid-run, and their launcher
    for process in processes:
        process.kill()
    psutil.wait_procs(processes, timeout=30)
    run.wait()
    step = _checkpoint_step(killed)  # the last one written before the kill
    resumed = train_t2i(_config(tmp_path, step + 1), killed, progress=False)
    straight = train_t2i(_config(tmp_path, step + 1), tmp_path / "straight", progress=False)
    start = train_t2i(_config(tmp_path, 0), tmp_path / "start", progress=False)
    assert _apart(_weights(resumed), _weights(straight), _weights(start)) < 0.01


def _checkpoint_step(out) -> int:
    from magicvideo.training.common import load_checkpoint

    try:
        state = load_checkpoint(out / "state")
    except (OSError, RuntimeError, EOFError):  # being replaced this instant
        return -1
    return -1 if state is None else state["step"]


@pytest.mark.parametrize("stage", ["vae", "vfi", "i2v"])
def test_the_other_trainers_train_alike_under_two_processes(tmp_path, stage):
    """The VAE draws its posterior noise with the batch; the interpolator runs its own GAN loop;
    stage 2 trains several modules, some of which sit out its image batches."""
    if stage == "i2v":
        from magicvideo.training.i2v import I2VTrainConfig as Config
        from magicvideo.training.i2v import train_i2v as train
        from tiny_components import tiny_unet

        tiny_unet(384).save_pretrained(tmp_path / "unet")
        tiny_vae(levels=4).save_pretrained(tmp_path / "vae")
        config = Config(clips=4, frames=3, size=32, t2i_unet=str(tmp_path / "unet"), vae=str(tmp_path / "vae"),
                        batch_size=2, image_batch_size=4, image_every=2, steps=2, warmup=1, lr=1e-3,
                        motion_heads=2, appearance_grid=2, appearance_widths=(8, 16),
                        controlnet_channels=(8, 16, 16, 32))
    elif stage == "vae":
        from magicvideo.training.vae import VAETrainConfig as Config
        from magicvideo.training.vae import train_vae as train

        config = Config(samples=8, size=32, crop=16, batch_size=4, steps=2, warmup=1, lr=1e-3, checkpoint_every=1,
                        widths=(16, 16, 16), eval_frames=0)
    else:
        from magicvideo.training.vfi import VFITrainConfig as Config
        from magicvideo.training.vfi import train_vfi as train

        config = Config(samples=8, size=32, crop=16, batch_size=4, steps=2, adv_start=1, warmup=1,
                        checkpoint_every=1, eval_clips=0, widths=(8, 16, 16))
    two = _launch(tmp_path, stage, config, tmp_path / "two", 2)
    assert two.returncode == 0, two.stderr[-2000:]
    one, start = train(config, tmp_path / "one", progress=False), train(replace(config, steps=0), tmp_path / "0",
                                                                         progress=False)
    assert _apart(_weights(tmp_path / "two" / "final"), _weights(one), _weights(start)) < 0.01


def test_a_batch_that_does_not_split_over_the_processes_fails_before_any_work(tmp_path):
    run = _launch(tmp_path, "t2i", replace(_config(tmp_path, 2), batch_size=3), tmp_path / "odd", 2)
    assert run.returncode != 0
    assert "batch_size 3 does not split evenly over 2 processes" in run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "odd" / "prompts.pt").exists()


def test_the_shipped_accelerate_configs_load():
    from accelerate.commands.config.config_args import load_config_from_file

    configs = {p.name: load_config_from_file(str(p)) for p in ACCELERATE.glob("*.yaml")}
    assert len(configs) >= 5 and configs["gpu_8.yaml"].num_processes == 8
    assert {c.machine_rank for n, c in configs.items() if n.startswith("two_machines")} == {0, 1}
