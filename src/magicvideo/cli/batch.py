"""`magicvideo generate --prompts FILE`: many runs, one run folder each, and an index.

Every line of FILE is checked before any model loads (an error names its line). Each run is
exactly the single `generate` of its prompt, seed and flags, in `<out>/<NNNN>-<prompt words>-seed<S>`;
a re-run keeps the finished runs, resumes the unfinished ones and refuses a folder that holds
another line's run. Started as N processes (torchrun, `accelerate launch`), process k takes
lines k, k + N, ...: each loads the models once, on its own GPU where there are several, and
none waits for another (the runs do not talk to each other).
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import json
import os
import sys
from pathlib import Path

from magicvideo.media import atomic_path

INDEX = "index.json"
# what a JSON line may set besides prompt and seed: the flags of one run (the models' flags,
# --preset, --weights, --lora, --dtype, are the batch's: every process loads its models once)
LINE_KEYS = ("image", "fit", "stages", "frames", "seconds", "fps", "times", "width", "height", "context_length",
             "context_stride", "cache_interval", "t2i_steps", "t2i_guidance", "t2i_size", "i2v_steps", "i2v_guidance",
             "i2v_size", "v2v_steps", "v2v_strength", "v2v_size", "prompt_schedule", "gif", "flavour")


@dataclasses.dataclass
class Line:
    number: int  # in the file, for errors
    values: dict  # generate's flags by name: prompt, seed and any of LINE_KEYS


def flag_kinds() -> dict[str, tuple[type, tuple | None]]:
    """(type, choices) of each generate flag, read off its parser (bool for a yes/no flag)."""
    from magicvideo.cli import build_parser

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {a.dest: (bool if isinstance(a, argparse._StoreTrueAction) else (a.type or str), a.choices)
            for a in commands.choices["generate"]._actions}


def _check_value(key: str, value, kind: type, choices, where: str) -> None:
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind in (int, float):
        number = isinstance(value, int | float) and not isinstance(value, bool)
        ok = number and (kind is float or isinstance(value, int))
    else:
        ok = isinstance(value, str)
    if not ok:
        raise ValueError(f"{where}: {key} must be {kind.__name__}, got {value!r}")
    if choices and value not in choices:
        raise ValueError(f"{where}: {key} must be one of {', '.join(map(str, choices))}, got {value!r}")


def read_prompts(path: str | os.PathLike, seed: int) -> list[Line]:
    """The runs a prompt file asks for: a prompt a line (blank lines and # comments skipped), or
    in a .jsonl file an object a line. Errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no prompt file {path}")
    lines = []
    kinds = flag_kinds() if path.suffix == ".jsonl" else {}
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        text = text.strip()
        if not text or text.startswith("#"):
            continue
        where = f"{path} line {number}"
        if path.suffix != ".jsonl":
            lines.append(Line(number, {"prompt": text, "seed": seed}))
            continue
        try:
            item = json.loads(text)
        except ValueError as err:
            raise ValueError(f"{where}: not JSON ({err})") from None
        if not isinstance(item, dict) or not isinstance(item.get("prompt"), str):
            raise ValueError(f'{where}: expected an object with a "prompt" string')
        unknown = sorted(set(item) - {"prompt", "seed", *LINE_KEYS})
        if unknown:
            raise ValueError(f"{where}: unknown key {unknown[0]!r} (a line sets prompt, seed, {', '.join(LINE_KEYS)})")
        for key, value in item.items():
            _check_value(key, value, *kinds[key], where)
        lines.append(Line(number, {"seed": seed, **item}))
    if not lines:
        raise ValueError(f"{path} holds no prompt")
    return lines


def run_folder(root: Path, index: int, values: dict) -> Path:
    from magicvideo.pipeline import default_run_dir

    return root / f"{index:04d}-{default_run_dir(values['prompt'], values['seed'], root).name}"


def _status(run_dir: Path, run) -> str:
    """'new', 'unfinished' or 'done'; a folder holding another run (or none) is an error."""
    from magicvideo.pipeline import MANIFEST, read_run
    from magicvideo.runlock import MARKER, RunLock

    if not run_dir.exists() or (run_dir.is_dir() and not any(run_dir.iterdir())):
        return "new"
    if not (run_dir / MANIFEST).is_file():
        if [p.name for p in run_dir.iterdir()] == [MARKER]:  # claimed, then killed before it began
            RunLock.acquire(run_dir).release(abandon=True)
            return "new"
        raise FileExistsError(f"{run_dir} is not a run folder; move it away or pass another --out")
    kept = read_run(run_dir)
    asked = dataclasses.asdict(run)
    # what the pipeline settles when a run begins (frames, the keyframes' rate) is left out where not asked
    changed = [k for k, v in dataclasses.asdict(kept).items()
               if asked[k] != v and not (k in ("frames", "key_fps") and asked[k] is None)]
    if changed:
        raise FileExistsError(f"{run_dir} holds a run of other settings ({', '.join(changed)} differ); "
                              "move it away or pass another --out")
    manifest = json.loads((run_dir / MANIFEST).read_text())
    done = all(manifest["stages"].get(name, {}).get("done") for name in kept.stages)
    return "done" if done else "unfinished"


def _write_index(root: Path, prompts: Path, entries: list[dict]) -> None:
    """The index of every run (each process writes it when its share is done; a lock serialises
    them and each reads every folder, so the last one to finish leaves the whole picture)."""
    from magicvideo.pipeline import FILES, MANIFEST, STAGES

    with open(root / ".index.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rows = []
        for entry in entries:
            run_dir = root / entry["run"]
            manifest = json.loads((run_dir / MANIFEST).read_text()) if (run_dir / MANIFEST).is_file() else None
            stages = manifest["settings"]["stages"] if manifest else []
            done = bool(manifest) and all(manifest["stages"].get(s, {}).get("done") for s in stages)
            last = [s for s in STAGES if s in stages][-1:] if done else []
            rows.append({**entry, "done": done, "video": f"{entry['run']}/{FILES[last[0]]}" if last else None})
        with atomic_path(root / INDEX) as tmp:
            tmp.write_text(json.dumps({"prompts": str(prompts.resolve()), "runs": rows}, indent=2) + "\n")


def run_batch(args: argparse.Namespace) -> None:
    from magicvideo.cli.runs import new_run
    from magicvideo.device import process_state
    from magicvideo.pipeline import FILES, MagicVideoPipeline, read_run

    if args.prompt is not None or args.prompt_schedule:
        raise ValueError("give a prompt or --prompts FILE, not both (a JSON line may have its own prompt_schedule)")
    prompts = Path(args.prompts)
    root = Path(args.out) if args.out else Path("runs") / prompts.stem
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"{root} is a file; --out names the folder of the runs")
    state = process_state()
    if args.device is None and state.device.type == "cuda":
        args.device = str(state.device)  # each process on its own GPU
    lines = read_prompts(prompts, args.seed)
    runs = []
    for i, line in enumerate(lines):  # every line checked before any model loads
        flags = argparse.Namespace(**{**vars(args), **line.values})
        try:
            run, files, where = new_run(flags)
            run_dir = run_folder(root, i, line.values)
            runs.append((line, run, run_dir, _status(run_dir, run) if i % state.num_processes ==
                         state.process_index else None))
        except (ValueError, FileNotFoundError, FileExistsError) as err:
            raise type(err)(f"{prompts} line {line.number}: {err}") from None
    root.mkdir(parents=True, exist_ok=True)
    progress = not args.quiet
    pipe = None
    mine = [r for i, r in enumerate(runs) if i % state.num_processes == state.process_index]
    for k, (_, run, run_dir, status) in enumerate(mine, 1):
        if progress:
            print(f"run {k}/{len(mine)}" + (f" (process {state.process_index + 1} of {state.num_processes})"
                                            if state.num_processes > 1 else "") + f": {run.prompt}", file=sys.stderr)
        if status == "done":
            if progress:
                print(f"{run_dir}: finished before, kept", file=sys.stderr)
            continue
        if pipe is None:  # once per process, and only if there is work
            pipe = MagicVideoPipeline.from_preset(args.preset, run.weights, placement=where, loras=files)
        if status == "unfinished":
            out = pipe.run(read_run(run_dir), run_dir, progress=progress, resume=True)
        else:
            out = pipe.run(run, run_dir, progress=progress)
        print(f"video: {out.paths[[s for s in FILES if s in out.paths][-1]]}")
    _write_index(root, prompts, [{"line": line.number, "prompt": run.prompt, "seed": run.seed, "run": run_dir.name}
                                 for line, run, run_dir, _ in runs])
    print(f"index: {root / INDEX}")
