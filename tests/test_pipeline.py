import json

import pytest
import torch
from diffusers import ControlNetModel, MotionAdapter

from magicvideo.media import read_image, read_video, write_image
from magicvideo.pipeline import MagicVideoPipeline, RunSettings, check_stages, read_run
from magicvideo.stages.t2i import T2ISettings, TextToImage
from magicvideo.stages.v2v import V2VSettings, VideoToVideo
from magicvideo.stages.vfi import FrameInterpolator
from magicvideo.text import MiniLMTextEncoder
from tiny_components import tiny_i2v, tiny_unet, tiny_vae

PROMPT = "a crimson star drifting to the left over a sunset"


class CrashError(Exception):
    """A stand-in for a kill or Ctrl-C in the middle of a stage."""


@pytest.fixture(scope="module")
def pipe():
    """The cascade on tiny random components: 64x64 reference, 32x32 keyframes, 64x64 frames."""
    text = MiniLMTextEncoder.from_pretrained()
    t2i = TextToImage(tiny_unet(text.dim), tiny_vae(levels=4), text, T2ISettings(size=64, steps=2, guidance=2.0))
    i2v = tiny_i2v(text)
    torch.manual_seed(5)
    adapter = MotionAdapter(block_out_channels=(32, 64), motion_layers_per_block=1, motion_num_attention_heads=2,
                            motion_norm_num_groups=32, use_motion_mid_block=False)
    cn = ControlNetModel.from_unet(i2v.spatial_unet(), conditioning_channels=6,
                                   conditioning_embedding_out_channels=(8, 16, 16, 32))
    v2v = VideoToVideo.attach(i2v, adapter, cn, V2VSettings(size=64, steps=2, strength=0.5))
    return MagicVideoPipeline(t2i, i2v, v2v, FrameInterpolator("blend"))


def test_cascade_writes_every_stage_and_a_manifest(pipe, tmp_path):
    out = pipe(PROMPT, seed=1, out=tmp_path / "run", frames=3, progress=False, gif=True)
    assert out.frames.shape == (3, 7, 64, 64)
    for name in ("reference.png", "keyframes.mp4", "hires.mp4", "final.mp4", "final.gif", "manifest.json"):
        assert (tmp_path / "run" / name).is_file(), name
    video, fps = read_video(tmp_path / "run" / "final.mp4")
    assert video.shape == (3, 7, 64, 64) and fps == 24
    assert read_video(tmp_path / "run" / "keyframes.mp4")[0].shape == (3, 3, 32, 32)
    assert read_video(tmp_path / "run" / "final.gif")[0].shape == (3, 7, 64, 64)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["settings"]["prompt"] == PROMPT and manifest["settings"]["seed"] == 1
    assert all(manifest["stages"][s]["done"] and manifest["stages"][s]["seconds"] > 0
               for s in ("t2i", "i2v", "v2v", "vfi"))
    assert {"magicvideo", "torch", "diffusers"} <= set(manifest["versions"])
    assert not list((tmp_path / "run").glob("*.partial*"))


def test_same_seed_same_bytes_and_resume_after_a_crash_gives_the_same_video(pipe, tmp_path, monkeypatch):
    pipe(PROMPT, seed=2, out=tmp_path / "a", frames=3, progress=False)
    pipe(PROMPT, seed=2, out=tmp_path / "b", frames=3, progress=False)
    final = (tmp_path / "a" / "final.mp4").read_bytes()
    assert (tmp_path / "b" / "final.mp4").read_bytes() == final

    calls, crashed = [], []
    real = pipe._stage

    def crash_in_v2v(name, *args):
        calls.append(name)
        if name == "v2v" and not crashed:
            crashed.append(name)
            raise CrashError
        return real(name, *args)

    monkeypatch.setattr(pipe, "_stage", crash_in_v2v)
    with pytest.raises(CrashError):
        pipe(PROMPT, seed=2, out=tmp_path / "c", frames=3, progress=False)
    assert not (tmp_path / "c" / "hires.mp4").exists() and (tmp_path / "c" / "keyframes.mp4").is_file()
    calls.clear()
    out = pipe.run(read_run(tmp_path / "c"), tmp_path / "c", progress=False, resume=True)
    assert calls == ["v2v", "vfi"]  # stages 1 and 2 were not run again
    assert (tmp_path / "c" / "final.mp4").read_bytes() == final
    assert out.frames.shape == (3, 7, 64, 64)


def test_stop_early_and_animate_a_given_image(pipe, tmp_path):
    out = pipe(PROMPT, out=tmp_path / "early", stages=("t2i", "i2v"), frames=2, progress=False)
    written = sorted(p.name for p in (tmp_path / "early").iterdir())
    assert written == [".run.lock", ".state", "keyframes.mp4", "manifest.json", "reference.png"]
    assert out.frames.shape == (3, 2, 32, 32)
    write_image(tmp_path / "mine.png", torch.rand(3, 64, 64))
    out = pipe(PROMPT, image=tmp_path / "mine.png", out=tmp_path / "mine", frames=2, progress=False)
    manifest = json.loads((tmp_path / "mine" / "manifest.json").read_text())
    assert "t2i" not in manifest["stages"] and (tmp_path / "mine" / "final.mp4").is_file()
    write_image(tmp_path / "wide.png", torch.rand(3, 48, 80))  # not square: cropped, not squashed
    pipe(PROMPT, image=tmp_path / "wide.png", out=tmp_path / "wide", stages=("i2v",), frames=2, progress=False)
    kept = read_image(tmp_path / "wide" / "reference.png")
    assert torch.equal(kept, read_image(tmp_path / "wide.png")[:, :, 16:64])


@pytest.mark.parametrize("stages, image, message", [
    (("t2i", "warp"), None, "unknown stage 'warp'"),
    (("t2i", "v2v"), None, "without gaps"),
    (("i2v",), None, "from t2i"),
    (("t2i", "i2v"), "ref.png", "replaces stage 1"),
    ((), None, "no stage"),
])
def test_stage_lists_are_checked(stages, image, message):
    with pytest.raises(ValueError, match=message):
        check_stages(stages, image)
    assert check_stages(("vfi", "i2v", "v2v"), "ref.png") == ("i2v", "v2v", "vfi")


def test_bad_runs_fail_before_any_stage_and_write_nothing(pipe, tmp_path):
    from magicvideo.errors import PromptError

    with pytest.raises(PromptError, match="takes at most"):
        pipe(" ".join(["red"] * 60), out=tmp_path / "long", progress=False)
    with pytest.raises(PromptError, match="empty"):
        pipe("  ", out=tmp_path / "empty", progress=False)
    with pytest.raises(ValueError, match="frames"):
        pipe(PROMPT, out=tmp_path / "frames", frames=2000, progress=False)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("mine")
    with pytest.raises(FileExistsError, match="--resume"):
        pipe(PROMPT, out=tmp_path / "busy", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy"]


def _cli(*args):
    from magicvideo.cli import main

    return main(list(args))


@pytest.mark.parametrize("args, message", [
    (["  "], "prompt is empty"),
    (["\u200b\u200b \ufeff"], "prompt is empty"),
    ([PROMPT, "--stages", "t2i,warp"], "unknown stage"),
    ([PROMPT, "--image", "MISSING"], "no such image"),
    ([PROMPT, "--image", "BROKEN"], "cannot read"),
    ([PROMPT, "--out", "BUSY"], "not empty"),
    (["--resume", "NOWHERE"], "not a run directory"),
    ([PROMPT, "--resume", "NOWHERE"], "not both"),
    (["--resume", "NOWHERE", "--frames", "8"], "leave out --frames"),
    ([PROMPT, "--weights", "NOWHERE"], "no weights folder"),
    ([PROMPT, "--seed", str(2**64)], "2^63"),
    ([PROMPT, "--seed", "-1"], "2^63"),
    ([PROMPT, "--out", "FILE"], "is a file"),
    ([PROMPT, "--frames", "4", "--seconds", "1"], "give --frames or --seconds, not both"),
    ([PROMPT, "--fps", "30", "--times", "2"], "give --fps or --times, not both"),
    ([PROMPT, "--seconds", "0"], "--seconds must be in (0, 1000]"),
    ([PROMPT, "--times", "0"], "--times"),
    ([PROMPT, "--width", "64"], "--width and --height together"),
])
def test_cli_bad_input_is_one_line_exit_2(tmp_path, capsys, args, message):
    (tmp_path / "broken.png").write_bytes(b"not an image")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("mine")
    (tmp_path / "file.txt").write_text("mine too")
    names = {"MISSING": "missing.png", "BROKEN": "broken.png", "BUSY": "busy", "NOWHERE": "nowhere",
             "FILE": "file.txt"}
    args = [str(tmp_path / names[a]) if a in names else a for a in args]
    assert _cli("generate", *args, "--quiet") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.png", "busy", "file.txt"]
    assert (tmp_path / "file.txt").read_text() == "mine too"


def test_read_run_gives_back_the_settings(pipe, tmp_path):
    pipe(PROMPT, seed=3, out=tmp_path / "r", stages=("t2i",), progress=False, t2i_steps=1)
    run = read_run(tmp_path / "r")
    assert isinstance(run, RunSettings) and run.seed == 3 and run.stages == ("t2i",) and run.t2i_steps == 1


def test_generate_runs_the_shipped_cascade_from_the_command_line(tmp_path, capsys):
    """`magicvideo generate` on the shipped tiny weights, few steps and 4 keyframes: plumbing, not quality."""
    assert _cli("generate", PROMPT, "--out", str(tmp_path / "run"), "--frames", "4", "--t2i-steps", "2",
                "--i2v-steps", "2", "--v2v-steps", "2", "--quiet") == 0
    printed = capsys.readouterr().out
    assert f"video: {tmp_path / 'run' / 'final.mp4'}" in printed
    video, fps = read_video(tmp_path / "run" / "final.mp4")
    assert video.shape == (3, 10, 128, 128) and fps == 24 and video.std() > 0.01
    assert _cli("generate", "--resume", str(tmp_path / "run"), "--quiet") == 0  # all done: nothing runs again


def test_resume_refuses_an_edited_manifest_and_wrong_state_and_keeps_its_image(pipe, tmp_path):
    from safetensors.torch import save_file

    run_dir = tmp_path / "r"
    write_image(tmp_path / "mine.png", torch.rand(3, 64, 64))
    pipe(PROMPT, out=run_dir, image=tmp_path / "mine.png", stages=("i2v",), frames=2, progress=False)
    assert (run_dir / "reference.png").is_file() and (run_dir / ".run.lock").is_file()
    (tmp_path / "mine.png").unlink()  # the run keeps its own copy of --image
    assert pipe.run(read_run(run_dir), run_dir, progress=False, resume=True).frames.shape == (3, 2, 32, 32)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["versions"]["threads"] == torch.get_num_threads()

    edited = json.loads(json.dumps(manifest))
    edited["settings"]["prompt"] = "a blue heart growing over the night sky"
    (run_dir / "manifest.json").write_text(json.dumps(edited))
    with pytest.raises(ValueError, match="edited since the run began .prompt differ"):
        pipe.run(read_run(run_dir), run_dir, progress=False, resume=True)
    edited["settings"]["colour"] = "red"
    (run_dir / "manifest.json").write_text(json.dumps(edited))
    with pytest.raises(ValueError, match="unknown setting"):
        read_run(run_dir)
    (run_dir / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_run(run_dir)
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    save_file({"frames": torch.zeros(3, 5, 32, 32, dtype=torch.uint8)}, run_dir / ".state" / "i2v.safetensors")
    with pytest.raises(ValueError, match=r"holds torch.uint8 \(3, 5, 32, 32\), not the uint8 \(3, 2, 32, 32\)"):
        pipe.run(read_run(run_dir), run_dir, progress=False, resume=True)
    (run_dir / ".state" / "i2v.safetensors").write_bytes(b"truncated")
    with pytest.raises(ValueError, match="unreadable"):
        pipe.run(read_run(run_dir), run_dir, progress=False, resume=True)


def _generate_until(argv: list[str], marker: str | None, delay: float = 0.0) -> int:
    """Run `magicvideo generate` in a subprocess; kill -9 it `delay` s after a stderr line holds
    `marker` (None: let it finish). Returns its exit status."""
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "magicvideo.cli", "generate", *argv], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True, bufsize=1)
    for line in proc.stderr:
        if marker is not None and marker in line:
            time.sleep(delay)
            proc.kill()
            break
    proc.wait()
    return proc.returncode


def _files(run_dir) -> dict[str, bytes]:
    return {p.relative_to(run_dir).as_posix(): p.read_bytes() for p in sorted(run_dir.rglob("*"))
            if p.is_file() and p.name != "manifest.json"}  # the manifest holds wall times


KILL_SETTINGS = ["--frames", "4", "--t2i-steps", "2", "--i2v-steps", "2", "--v2v-steps", "2",
                 "--v2v-strength", "0.5"]  # strength > 0: stage 3 denoises, where layouts once changed values


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    assert _generate_until([PROMPT, "--out", str(run_dir), *KILL_SETTINGS], None) == 0
    return run_dir


# ("stage 3/4", 0.2): inside stage 3, which takes about 0.4 s on an idle 2-core CPU (and stages 3-4
# together under 1 s, so a longer delay can miss both)
@pytest.mark.parametrize("marker, delay", [("stage 2/4", 0.0), ("stage 3/4", 0.0), ("stage 4/4", 0.0),
                                           ("stage 3/4", 0.2)])
def test_a_killed_generate_resumes_to_the_bytes_of_an_uninterrupted_one(straight, tmp_path, marker, delay):
    """kill -9 at each stage boundary and inside stage 3, then `generate --resume`: every file the
    run keeps has the bytes of a run that was never killed."""
    killed = tmp_path / "killed"
    assert _generate_until([PROMPT, "--out", str(killed), *KILL_SETTINGS], marker, delay) != 0
    assert not (killed / "final.mp4").exists()
    assert _generate_until(["--resume", str(killed), "--quiet"], None) == 0
    assert _files(killed) == _files(straight)


def test_ctrl_c_while_a_video_is_written_exits_130_and_the_run_resumes(straight, tmp_path):
    """SIGINT as ffmpeg writes the last video: the file is finished first, the exit is 130 with
    one line (it once was 0, the interrupt swallowed in ffmpeg's teardown), and a resume ends
    with the bytes of an uninterrupted run."""
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "magicvideo.cli", "generate", PROMPT, "--out", str(run),
                             *KILL_SETTINGS, "--quiet"], stderr=subprocess.PIPE, text=True)
    while proc.poll() is None and not list(run.glob(".final.*.partial.mp4")):
        time.sleep(0.002)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate()[1].strip()
    if proc.returncode == 0:
        pytest.skip("the run ended before the signal landed")
    assert proc.returncode == 130 and err == "magicvideo generate: interrupted", err
    assert not list(run.glob(".*.partial*"))
    assert _generate_until(["--resume", str(run), "--quiet"], None) == 0
    assert _files(run) == _files(straight)


def test_a_final_rate_makes_the_frames_it_needs_and_resumes(pipe, tmp_path):
    out = pipe(PROMPT, seed=1, out=tmp_path / "run", frames=3, fps=20, progress=False)
    # 3 keyframes at 8 fps last 2 gaps of 1/8 s: at 20 fps that is floor(2 * 20 / 8) + 1 = 6 frames
    assert out.frames.shape == (3, 6, 64, 64)
    video, fps = read_video(tmp_path / "run" / "final.mp4")
    assert video.shape[1] == 6 and fps == 20
    run = read_run(tmp_path / "run")
    assert (run.fps, run.key_fps) == (20, 8.0)
    assert pipe.run(run, tmp_path / "run", progress=False, resume=True).frames.shape == (3, 6, 64, 64)
    with pytest.raises(ValueError, match="fps must be positive"):
        pipe(PROMPT, out=tmp_path / "bad", frames=3, fps=0, progress=False)


def test_keyframes_come_from_the_stage_or_the_length(pipe, tmp_path):
    """No frames given: stage 2's own count (what its stage.json says), not a default of the caller's;
    seconds: that length at the keyframes' rate, recorded so the run resumes with the same count."""
    import dataclasses

    own = pipe.i2v.settings
    pipe.i2v.settings = dataclasses.replace(own, frames=3)
    try:
        out = pipe(PROMPT, out=tmp_path / "own", stages=("t2i", "i2v"), progress=False)
        assert out.frames.shape[1] == 3 and read_run(tmp_path / "own").frames == 3
    finally:
        pipe.i2v.settings = own
    out = pipe(PROMPT, out=tmp_path / "len", stages=("t2i", "i2v"), seconds=0.25, progress=False)
    run = read_run(tmp_path / "len")
    assert out.frames.shape[1] == 3 and (run.frames, run.seconds, run.key_fps) == (3, 0.25, 8.0)  # 0.25 s x 8 + 1
    assert pipe.run(run, tmp_path / "len", progress=False, resume=True).frames.shape[1] == 3
    with pytest.raises(ValueError, match="not both"):
        pipe(PROMPT, out=tmp_path / "both", frames=5, seconds=0.25, progress=False)


def test_a_wide_video_scales_every_stage_from_the_last(pipe, tmp_path):
    """width x height is stage 3's frame; stages 1 and 2 keep their sides' ratio to it (here 64:32:64),
    and a given reference is cropped to the keyframes' shape, not squashed."""
    out = pipe(PROMPT, out=tmp_path / "wide", frames=2, width=128, height=64, progress=False)
    assert out.frames.shape == (3, 4, 64, 128)
    assert read_image(tmp_path / "wide" / "reference.png").shape == (3, 64, 128)
    keys, _ = read_video(tmp_path / "wide" / "keyframes.mp4")
    assert keys.shape == (3, 2, 32, 64)
    write_image(tmp_path / "square.png", torch.rand(3, 64, 64))
    pipe(PROMPT, image=tmp_path / "square.png", out=tmp_path / "mine", stages=("i2v",), frames=2, width=128,
         height=64, progress=False)
    kept = read_image(tmp_path / "mine" / "reference.png")
    assert torch.equal(kept, read_image(tmp_path / "square.png")[:, 16:48])  # its centre 2:1 band
    with pytest.raises(ValueError, match="multiple of"):
        pipe(PROMPT, out=tmp_path / "odd", frames=2, width=120, height=64, progress=False)
