"""A hostile user's campaign against the CLI: kills, races, broken files, odd input. Each case
runs `magicvideo` in subprocesses and passes when the run either gives the right bytes or fails
with one line on stderr, exit code 2, no traceback, and nothing half-written:

    python benchmarks/fault_campaign.py [--work /tmp/faults]

Prints one line per case and the pass count. Small settings (4 keyframes, 2 steps a stage) keep
it to a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

PROMPT = "a red star moving left over a meadow"
SMALL = ["--frames", "4", "--t2i-steps", "2", "--i2v-steps", "2", "--v2v-steps", "2", "--v2v-strength", "0.5"]
CLI = [sys.executable, "-m", "magicvideo.cli"]


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd)


def one_line_error(result: subprocess.CompletedProcess) -> bool:
    err = result.stderr.strip()
    return result.returncode == 2 and "Traceback" not in err and len(err.splitlines()) == 1 and "error:" in err


def files(run: Path) -> dict[str, bytes]:
    return {p.relative_to(run).as_posix(): p.read_bytes() for p in sorted(run.rglob("*"))
            if p.is_file() and p.name != "manifest.json"}


def kill_when(args: list[str], marker: str, delay: float = 0.0, cwd: Path | None = None) -> None:
    """Run the CLI and kill -9 it `delay` s after a stderr line holds `marker`."""
    proc = subprocess.Popen([*CLI, *args], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, bufsize=1,
                            cwd=cwd)
    for line in proc.stderr:
        if marker in line:
            time.sleep(delay)
            proc.kill()
            break
    proc.wait()


def campaign(work: Path) -> list[tuple[str, Callable[[], bool]]]:
    from magicvideo.presets.tiny import TINY

    straight = work / "straight"

    def reference_run() -> Path:
        if not (straight / "final.mp4").is_file():
            cli("generate", PROMPT, "--out", str(straight), *SMALL, "--quiet")
        return straight

    def killed_resume(marker: str, delay: float = 0.0) -> Callable[[], bool]:
        def case() -> bool:
            run = work / f"killed-{marker.replace(' ', '').replace('/', '_')}-{delay}"
            kill_when(["generate", PROMPT, "--out", str(run), *SMALL], marker, delay)
            ok = cli("generate", "--resume", str(run), "--quiet").returncode == 0
            return ok and files(run) == files(reference_run())
        return case

    def race() -> bool:
        out = work / "race"
        procs = [subprocess.Popen([*CLI, "generate", PROMPT, "--out", str(out), *SMALL, "--quiet"],
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
        codes = sorted(p.wait() for p in procs)
        return codes == [0, 2] and (out / "final.mp4").is_file()

    def grey16() -> bool:
        ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
        Image.fromarray(ramp).save(work / "g16.png")
        run = work / "g16"
        ok = cli("generate", PROMPT, "--image", str(work / "g16.png"), "--out", str(run), "--stages", "i2v",
                 *SMALL[:2], "--quiet").returncode == 0
        return ok and np.asarray(Image.open(run / "reference.png")).mean() < 200  # not white

    def broken_weights(stage: str, damage: str) -> Callable[[], bool]:
        def case() -> bool:
            root = work / f"w-{stage}-{damage}"
            folder = root / stage
            shutil.copytree(TINY / ("vfi_edsc" if stage == "vfi" else stage), folder)
            part = next(p for p in sorted(folder.rglob("*.safetensors")))
            if damage == "missing":
                part.unlink()
            elif damage == "truncated":
                part.write_bytes(part.read_bytes()[:100])
            elif damage == "json":
                (part.parent / "config.json").write_text("{oops")
            else:  # a pickle where safetensors belong
                part.rename(part.with_suffix(".bin"))
            return one_line_error(cli("generate", PROMPT, "--weights", str(root), "--out", str(root / "run"),
                                      *SMALL, "--quiet")) and not (root / "run").exists()
        return case

    def bad(*args: str, setup: Callable[[], None] | None = None, untouched: Path | None = None) -> Callable[[], bool]:
        def case() -> bool:
            if setup is not None:
                setup()
            before = files(untouched) if untouched is not None and untouched.is_dir() else None
            ok = one_line_error(cli(*args))
            return ok and (before is None or files(untouched) == before)
        return case

    def state_run(name: str) -> Path:
        run = work / name
        cli("generate", PROMPT, "--out", str(run), *SMALL, "--stages", "t2i,i2v", "--quiet")
        return run

    def edit_manifest(run_name: str, change: Callable[[dict], None]) -> Callable[[], None]:
        def setup() -> None:
            run = state_run(run_name)
            manifest = json.loads((run / "manifest.json").read_text())
            change(manifest)
            (run / "manifest.json").write_text(json.dumps(manifest))
        return setup

    def corrupt_state(run_name: str, data: bytes | None) -> Callable[[], None]:
        def setup() -> None:
            run = state_run(run_name)
            if data is None:
                import torch
                from safetensors.torch import save_file

                save_file({"frames": torch.zeros(3, 2, 64, 64, dtype=torch.uint8)}, run / ".state" / "i2v.safetensors")
            else:
                (run / ".state" / "i2v.safetensors").write_bytes(data)
        return setup

    def relative_image() -> bool:
        Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)).save(work / "rel.png")
        run = work / "rel"
        kill_when(["generate", PROMPT, "--image", "rel.png", "--out", str(run), *SMALL], "stage 2/3", cwd=work)
        (work / "rel.png").unlink()  # the outside image is gone; the run kept its copy
        return cli("generate", "--resume", str(run), "--quiet", cwd=Path("/")).returncode == 0

    def partial_cleaned() -> bool:
        run = work / "partial"
        kill_when(["generate", PROMPT, "--out", str(run), *SMALL], "stage 4/4", 0.5)
        (run / ".final.x.partial.mp4").write_bytes(b"half")
        ok = cli("generate", "--resume", str(run), "--quiet").returncode == 0
        return ok and not list(run.glob(".*.partial*"))

    def ctrl_c_while_writing() -> bool:
        run = work / "ctrl-c"
        proc = subprocess.Popen([*CLI, "generate", PROMPT, "--out", str(run), *SMALL, "--quiet"],
                                stderr=subprocess.PIPE, text=True)
        while proc.poll() is None and not list(run.glob(".final.*.partial.mp4")):
            time.sleep(0.002)
        proc.send_signal(signal.SIGINT)
        err = proc.communicate()[1].strip()
        resumed = cli("generate", "--resume", str(run), "--quiet").returncode == 0
        return proc.returncode == 130 and err.count("\n") == 0 and resumed and files(run) == files(reference_run())

    def threads_recorded() -> bool:
        run = work / "threads"
        cli("generate", PROMPT, "--out", str(run), *SMALL, "--stages", "t2i", "--quiet")
        return "threads" in json.loads((run / "manifest.json").read_text())["versions"]

    def odd_web() -> bool:
        import torch

        from magicvideo.media import write_video

        write_video(work / "odd.mp4", torch.rand(3, 3, 33, 35), 8)
        return one_line_error(cli("interpolate", str(work / "odd.mp4"), "-o", str(work / "odd-out.mp4"),
                                  "--flavour", "web", "--model", "blend")) and not (work / "odd-out.mp4").exists()

    def bomb() -> bool:
        Image.new("1", (14000, 14000)).save(work / "bomb.png")
        return one_line_error(cli("generate", PROMPT, "--image", str(work / "bomb.png"), "--out", str(work / "b")))

    (work / "a-file").write_text("mine")
    return [
        ("kill at stage 2 boundary, resume: same bytes", killed_resume("stage 2/4")),
        ("kill at stage 3 boundary, resume: same bytes", killed_resume("stage 3/4")),
        ("kill at stage 4 boundary, resume: same bytes", killed_resume("stage 4/4")),
        ("kill inside stage 3, resume: same bytes", killed_resume("stage 3/4", 1.0)),
        ("two runs on one --out: one wins, one exits 2", race),
        ("16-bit PNG reference is not white", grey16),
        *[(f"{stage} weights {damage}: one line, exit 2", broken_weights(stage, damage))
          for stage in ("i2v", "v2v", "vfi") for damage in ("missing", "truncated", "json", "pickle")],
        ("--out names a file", bad("generate", PROMPT, "--out", str(work / "a-file"), untouched=work / "a-file")),
        ("--out under a file (unwritable)", bad("generate", PROMPT, "--out", str(work / "a-file" / "run"))),
        ("image over Pillow's pixel limit", bomb),
        ("corrupt .state file", bad("generate", "--resume", str(work / "s1"), setup=corrupt_state("s1", b"junk"))),
        ("unknown key in manifest.json", bad("generate", "--resume", str(work / "s2"),
                                             setup=edit_manifest("s2", lambda m: m["settings"].update(colour=1)))),
        ("seed 2^64", bad("generate", PROMPT, "--seed", str(2**64), "--out", str(work / "seed"))),
        (".state tensor of the wrong shape", bad("generate", "--resume", str(work / "s3"),
                                                 setup=corrupt_state("s3", None))),
        ("edited prompt in manifest.json", bad("generate", "--resume", str(work / "s4"), setup=edit_manifest(
            "s4", lambda m: m["settings"].update(prompt="a blue heart over the night sky")))),
        ("relative --image, resumed elsewhere after it is gone", relative_image),
        ("thread count recorded in the manifest", threads_recorded),
        ("a kill's .partial file is cleaned on resume", partial_cleaned),
        ("Ctrl-C as the last video is written: exit 130, resumes to the same bytes", ctrl_c_while_writing),
        ("a prompt of zero-width spaces", bad("generate", "\u200b\u200b", "--out", str(work / "zw"))),
        ("interpolate --flavour web on an odd size fails before the work", odd_web),
        ("--resume with other settings", bad("generate", "--resume", str(work / "straight"), "--frames", "8")),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/magicvideo-faults"))
    parser.add_argument("--only", nargs="+", metavar="WORDS", help="run only the cases whose name holds these words")
    args = parser.parse_args()
    if args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True)
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    passed = 0
    cases = campaign(args.work)
    if args.only:
        cases = [(name, case) for name, case in cases if any(word in name for word in args.only)]
    for name, case in cases:
        began = time.perf_counter()
        try:
            ok = bool(case())
        except Exception as err:  # a case that crashes the campaign itself fails, it does not stop the rest
            ok, name = False, f"{name} ({type(err).__name__}: {err})"
        passed += ok
        print(f"{'pass' if ok else 'FAIL'}  {name}  ({time.perf_counter() - began:.0f} s)", flush=True)
    print(f"{passed} of {len(cases)} cases pass ({100 * passed / len(cases):.0f}%)")


if __name__ == "__main__":
    main()
