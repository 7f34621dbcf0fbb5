"""A side-by-side study of the shipped tiny cascade against its own stage-2 ablations, voted by
the automatic rater (the judge), reported as the paper reports its study:

    python benchmarks/study_ablations.py [--prompts 50] [--work runs/study_ablations]

Systems: `full` (the shipped defaults), `no_appearance` (stage 2's appearance encoder scaled to
0), `no_noise_prior` (stage 2's latent noise prior 0), `no_controlnet` (stage 2's ControlNet
scale 0); stages 1, 3 and 4 as shipped. Prompts: the first `--prompts` held-out test prompts
(seed 4242), one video each at seed 0. Every pair is `full` against one ablation (the ablations
are not compared with each other). Writes benchmarks/results/study_ablations.md and .png; the
study database stays in the work folder, ready for `magicvideo study serve` and human votes.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from magicvideo.pipeline import MagicVideoPipeline
from magicvideo.study.auto import auto_rate
from magicvideo.study.build import new_study
from magicvideo.study.report import build_report, markdown, plot
from magicvideo.training.common import machine
from magicvideo.world import draw_clip
from report import publish

ABLATIONS = {"full": {}, "no_appearance": {"appearance_scale": 0.0}, "no_noise_prior": {"noise_prior": 0.0},
             "no_controlnet": {"controlnet_scale": 0.0}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=50)
    parser.add_argument("--work", type=Path, default=Path("runs/study_ablations"))
    parser.add_argument("--out", default="benchmarks/results/study_ablations.md")
    args = parser.parse_args()
    prompts = [draw_clip(4242, "heldout", i).caption for i in range(args.prompts)]
    started = time.perf_counter()
    pipe = MagicVideoPipeline.from_preset("tiny")
    shipped = dict(vars(pipe.i2v.settings))
    # prompt by prompt, every system: a run stopped early leaves its first prompts complete, and
    # `--prompts K` with K of them done reports those at once
    for i, prompt in enumerate(prompts):
        for system, change in ABLATIONS.items():
            run = args.work / system / f"prompt-{i:03d}"
            if (run / "final.mp4").is_file():
                continue  # finished by an earlier, interrupted call
            if run.is_dir():
                shutil.rmtree(run)  # resume() would reload the shipped settings; the run is deterministic
            for key, value in {**shipped, **change}.items():
                setattr(pipe.i2v.settings, key, value)
            # stage 1 is the same for every system: the ablations animate full's reference image
            image = None if system == "full" else args.work / "full" / run.name / "reference.png"
            pipe(prompt, seed=0, out=run, progress=False, image=image)
        print(f"prompt {i + 1} of {len(prompts)} ({time.perf_counter() - started:.0f} s so far)", flush=True)
    generated = time.perf_counter() - started
    db_path = args.work / "study.db"
    for stale in (db_path, db_path.with_name("study.media")):
        if stale.is_file():
            stale.unlink()
        elif stale.is_dir():
            shutil.rmtree(stale)
    db = new_study(db_path, [f"{s}={args.work / s}" for s in ABLATIONS], against="full", progress=False)
    auto_rate(db, db_path, progress=False)
    report = build_report(db)
    chart = Path(args.out).with_suffix(".png")
    plot(report, str(chart))
    lines = [
        "# Study: the tiny cascade against its stage-2 ablations, voted by the judge", "",
        f"Command: `python benchmarks/study_ablations.py --prompts {args.prompts}` ({generated:.0f} s to generate, "
        f"{time.perf_counter() - started:.0f} s in all, on {machine()}). {args.prompts} held-out test prompts "
        "(seed 4242), one video per system at seed 0; `full` is the shipped cascade; each ablation turns one "
        "stage-2 mechanism off (appearance encoder, latent noise prior, ControlNet) and animates full's "
        "stage-1 image. G: the judge rater prefers `full`; B: it prefers the ablation; S: the same "
        "(its rule: `magicvideo/study/auto.py`).", "",
        *markdown(report), "", f"![G / S / B per comparison]({chart.name})",
    ]
    publish(args.out, lines)


if __name__ == "__main__":
    main()
