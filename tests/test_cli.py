"""The command line: synth writes what judge reads; bad input is one line and exit code 2."""

import json

import torch

from magicvideo.cli import main
from magicvideo.media import read_video, write_video
from magicvideo.world import draw_clip, render_clip


def _meta(folder):
    return [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]


def test_synth_then_judge_scores_ground_truth_perfectly(tmp_path, capsys):
    out = tmp_path / "w"
    assert main(["synth", "--out", str(out), "--count", "6", "--split", "heldout", "--seed", "3",
                 "--size", "64", "--quiet"]) == 0
    meta = _meta(out)
    assert len(meta) == 6 and all((out / m["file"]).is_file() for m in meta)
    assert {"file", "caption", "objects", "background"} <= set(meta[0])
    assert {"shape", "colour", "motion"} <= set(meta[0]["objects"][0])
    capsys.readouterr()
    assert main(["judge", str(out), "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["accuracy"]["all"] == 1.0 and report["clips"] == 6
    assert set(report["accuracy"]) == {"shape", "colour", "background", "motion", "all"}
    assert set(report["temporal"]) == {"flicker", "track_jitter", "count_stability"}
    clip = report["per_clip"][0]
    assert clip["file"] == meta[0]["file"] and clip["score"]["all"] is True
    assert len(clip["read"]["objects"]) == len(meta[0]["objects"])
    assert main(["judge", str(out), "--quiet", "--summary", "--compact"]) == 0
    assert "per_clip" not in json.loads(capsys.readouterr().out)


def test_scenes_do_not_depend_on_size_or_frame_rate(tmp_path):
    common = ["--count", "3", "--split", "train", "--seed", "9", "--quiet"]
    main(["synth", "--out", str(tmp_path / "a"), "--size", "64", *common])
    main(["synth", "--out", str(tmp_path / "b"), "--size", "32", "--fps", "8", "--frames", "16", *common])
    a, b = _meta(tmp_path / "a"), _meta(tmp_path / "b")
    for x, y in zip(a, b):
        assert x["caption"] == y["caption"] and x["objects"] == y["objects"]
    full, _ = read_video(tmp_path / "a" / a[0]["file"])
    assert full.shape == (3, 46, 64, 64)
    keys, fps = read_video(tmp_path / "b" / b[0]["file"])
    assert keys.shape == (3, 16, 32, 32) and fps == 8


def test_judge_scores_a_video_against_a_prompt(tmp_path, capsys):
    clip = draw_clip(2, "heldout", 0)
    write_video(tmp_path / "v.mp4", render_clip(clip.scene, 64, 8, 16), 8)
    assert main(["judge", str(tmp_path / "v.mp4"), "--prompt", clip.caption, "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"]["all"] == 1.0
    wrong = clip.caption.replace(clip.scene.background.split()[0], "zzz")
    assert main(["judge", str(tmp_path / "v.mp4"), "--prompt", wrong, "--quiet"]) == 2


def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "empty").mkdir()
    torch.save({}, tmp_path / "x.mp4")
    for argv in (["judge", str(tmp_path / "notes.txt")], ["judge", str(tmp_path / "empty")],
                 ["judge", str(tmp_path / "x.mp4")], ["judge", str(tmp_path / "nope.mp4")],
                 ["judge", str(tmp_path / "x.mp4"), "--prompt", "a red circle in space"],
                 ["synth", "--out", str(tmp_path / "o"), "--count", "0"]):
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("magicvideo ") and "\n" not in err, err


def test_broken_weights_files_and_outputs_are_one_line_and_exit_code_2(tmp_path, capsys):
    """A weights folder with a file missing, cut short or not JSON, an output on a read-only
    folder: each is one line on stderr and exit code 2, never a traceback."""
    import shutil

    from magicvideo.presets.tiny import TINY, TINY_EDSC

    clip = render_clip(draw_clip(3, "heldout", 0).scene, 32, fps=8, frames=3)
    write_video(tmp_path / "in.mp4", clip, 8)
    cases = []
    for damage in ("missing", "truncated", "not json"):
        folder = tmp_path / damage.replace(" ", "_")
        shutil.copytree(TINY_EDSC, folder)
        weights = folder / "diffusion_pytorch_model.safetensors"
        if damage == "missing":
            weights.unlink()
        elif damage == "truncated":
            weights.write_bytes(weights.read_bytes()[:1000])
        else:
            (folder / "config.json").write_text("{not json")
        cases.append(["interpolate", str(tmp_path / "in.mp4"), "-o", str(tmp_path / "out.mp4"), "--model", "edsc",
                      "--weights", str(folder), "--quiet"])
    i2v = tmp_path / "w" / "i2v"
    shutil.copytree(TINY / "i2v", i2v)
    (i2v / "motion_adapter" / "diffusion_pytorch_model.safetensors").write_bytes(b"cut")
    v2v = tmp_path / "w2" / "v2v"
    shutil.copytree(TINY / "v2v", v2v)
    (v2v / "controlnet" / "diffusion_pytorch_model.safetensors").rename(v2v / "controlnet" / "model.bin")
    for root in ("w", "w2"):
        cases.append(["generate", "a red star moving left over a meadow", "--weights", str(tmp_path / root),
                      "--out", str(tmp_path / "run"), "--quiet"])
    # an output folder that cannot be made (its parent is a file), as a read-only or full disk fails
    cases.append(["interpolate", str(tmp_path / "in.mp4"), "-o", str(tmp_path / "in.mp4" / "out.mp4"),
                  "--model", "blend", "--quiet"])
    for argv in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"magicvideo {argv[0]}: error: ") and "\n" not in err, err
    assert not (tmp_path / "out.mp4").exists() and not (tmp_path / "run").exists()
