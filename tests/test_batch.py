"""`magicvideo generate --prompts FILE`: one run folder per line, each the single run of its
prompt and seed, byte for byte; re-runs keep and resume; bad lines fail before any work; two
processes share the lines."""

import json
import os
import socket
import subprocess
import sys

import pytest

from magicvideo.cli import main
from magicvideo.cli.batch import read_prompts

FAST = ["--stages", "t2i,i2v", "--frames", "4", "--t2i-steps", "2", "--i2v-steps", "2", "--quiet"]
PROMPTS = ["a red star moving left over a meadow", "a blue heart growing over the night sky",
           "a green square spinning over a sunset"]


def test_a_prompt_file_is_read_line_by_line_and_its_errors_name_the_line(tmp_path):
    text = tmp_path / "p.txt"
    text.write_text("# mine\na red star\n\n  a blue heart  \n")
    assert [(line.number, line.values) for line in read_prompts(text, 7)] == [
        (2, {"prompt": "a red star", "seed": 7}), (4, {"prompt": "a blue heart", "seed": 7})]
    lines = tmp_path / "p.jsonl"
    lines.write_text('{"prompt": "a red star", "seed": 3, "frames": 8, "gif": true}\n{"prompt": "a blue heart"}\n')
    assert [line.values for line in read_prompts(lines, 0)] == [
        {"prompt": "a red star", "seed": 3, "frames": 8, "gif": True}, {"prompt": "a blue heart", "seed": 0}]
    for bad, message in [('{"prompt": "x", "colour": "red"}', "line 1: unknown key 'colour'"),
                         ('{"prompt": "x", "frames": "8"}', "line 1: frames must be int"),
                         ('{"prompt": "x", "fit": "zoom"}', "line 1: fit must be one of crop, pad, stretch"),
                         ('{"seed": 1}', 'line 1: expected an object with a "prompt" string'),
                         ("{prompt", "line 1: not JSON")]:
        lines.write_text(bad + "\n")
        with pytest.raises(ValueError, match=message):
            read_prompts(lines, 0)
    text.write_text("# nothing\n")
    with pytest.raises(ValueError, match="holds no prompt"):
        read_prompts(text, 0)


def test_each_line_is_the_single_run_of_its_prompt_and_a_rerun_keeps_and_resumes(tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    root = tmp_path / "batch"
    assert main(["generate", "--prompts", str(prompts), "--out", str(root), "--seed", "4", *FAST]) == 0
    index = json.loads((root / "index.json").read_text())
    assert [r["prompt"] for r in index["runs"]] == PROMPTS and all(r["done"] for r in index["runs"])
    second = root / index["runs"][1]["run"]
    assert second.name == "0001-a-blue-heart-growing-over-the-seed4"
    assert main(["generate", PROMPTS[1], "--out", str(tmp_path / "single"), "--seed", "4", *FAST]) == 0
    for name in ("reference.png", "keyframes.mp4"):
        assert (second / name).read_bytes() == (tmp_path / "single" / name).read_bytes()
    # a re-run keeps what is finished and resumes what is not (stage 2 of the second run, as if killed)
    manifest = json.loads((second / "manifest.json").read_text())
    manifest["stages"]["i2v"]["done"] = False
    (second / "manifest.json").write_text(json.dumps(manifest))
    before = {r["run"]: (root / r["run"] / "keyframes.mp4").stat().st_mtime_ns for r in index["runs"]}
    capsys.readouterr()
    assert main(["generate", "--prompts", str(prompts), "--out", str(root), "--seed", "4", *FAST]) == 0
    assert capsys.readouterr().out.count("video: ") == 1  # the unfinished run alone ran
    after = {r["run"]: (root / r["run"] / "keyframes.mp4").stat().st_mtime_ns for r in index["runs"]}
    assert [after[k] == v for k, v in before.items()] == [True, False, True]
    assert (second / "keyframes.mp4").read_bytes() == (tmp_path / "single" / "keyframes.mp4").read_bytes()
    # the same folders asked for other runs (stage 1 at 3 steps) are refused before any work
    other = [a if a != "2" else "3" for a in FAST]
    assert main(["generate", "--prompts", str(prompts), "--out", str(root), "--seed", "4", *other]) == 2
    assert "holds a run of other settings (t2i_steps, i2v_steps differ)" in capsys.readouterr().err


def test_a_bad_line_fails_in_one_line_before_any_folder_is_made(tmp_path, capsys):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "a red star"}\n{"prompt": "a blue heart", "frames": 0}\n')
    assert main(["generate", "--prompts", str(prompts), "--out", str(tmp_path / "b"), *FAST]) == 2
    err = capsys.readouterr().err
    assert f"{prompts} line 2: --frames must be" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()
    assert main(["generate", "a red star", "--prompts", str(prompts)]) == 2


def _batch(tmp_path, prompts, out, processes: int) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "magicvideo.cli"]
    if processes > 1:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        command = [sys.executable, "-m", "accelerate.commands.launch", "--quiet", "--multi_gpu", "--num_processes",
                   str(processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                   "--main_process_port", str(port), "-m", "magicvideo.cli"]
    # gloo on the loopback interface: a test machine's hostname need not resolve
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true", "GLOO_SOCKET_IFNAME": "lo"}
    return subprocess.run([*command, "generate", "--prompts", str(prompts), "--out", str(out), *FAST],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)


def test_two_processes_share_the_lines_and_make_the_same_bytes(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    two = _batch(tmp_path, prompts, tmp_path / "two", 2)
    assert two.returncode == 0, two.stderr[-2000:]
    assert sorted(line for line in two.stdout.splitlines() if line.startswith("video: ")) == [
        f"video: {tmp_path / 'two'}/{i:04d}-{name}-seed0/keyframes.mp4"
        for i, name in enumerate(["a-red-star-moving-left-over", "a-blue-heart-growing-over-the",
                                  "a-green-square-spinning-over-a"])]  # each run once
    one = _batch(tmp_path, prompts, tmp_path / "one", 1)
    assert one.returncode == 0, one.stderr[-2000:]
    runs = json.loads((tmp_path / "two" / "index.json").read_text())["runs"]
    assert all(r["done"] for r in runs)
    for r in runs:
        assert (tmp_path / "two" / r["video"]).read_bytes() == (tmp_path / "one" / r["video"]).read_bytes()
