"""The cascade: a prompt becomes a reference image (T2I), low-res keyframes (I2V), high-res
frames (V2V) and a smooth video (VFI), in a run directory that survives a crash.

    pipe = MagicVideoPipeline.from_preset("tiny")
    out = pipe("a crimson star drifting to the left over a sunset", seed=0, out="runs/star")
    out.frames  # (3, 46, 128, 128) in [0, 1]; out.paths["vfi"] -> runs/star/final.mp4

The prompt is encoded once; stages hand tensors in memory; stages 2 and 3 share one backbone.
Every stage's output is handed on as 8-bit frames and kept losslessly in the run directory
(`.state/`), so a resumed run (`MagicVideoPipeline.resume(DIR)`) gives the very frames, and
bytes, of an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from magicvideo.device import Placement
from magicvideo.diffusion.schedule import check_seed
from magicvideo.errors import PromptError
from magicvideo.formats import LoraFile
from magicvideo.latent import vae_factor
from magicvideo.media import atomic_path, check_fit, fit_shape, read_image, write_image, write_video
from magicvideo.runlock import RunLock
from magicvideo.settings import I2VSettings, T2ISettings, V2VSettings, VFISettings, check_value
from magicvideo.stages.vfi import output_frames
from magicvideo.text import is_blank
from magicvideo.travel import PromptSchedule

STAGES = ("t2i", "i2v", "v2v", "vfi")
FILES = {"t2i": "reference.png", "i2v": "keyframes.mp4", "v2v": "hires.mp4", "vfi": "final.mp4"}
MANIFEST = "manifest.json"
SETTINGS = "settings.json"  # in .state/: the settings a run began with


@dataclass
class RunSettings:
    """Everything that decides the output; written to the manifest and read back by resume."""

    prompt: str  # with a prompt schedule: its frame-0 prompt (the reference image's)
    seed: int = 0
    preset: str = "tiny"
    weights: str | None = None  # tiny: a folder of any of t2i/ i2v/ v2v/ vfi/; sd15: the layout's folder
    dtype: str = "fp32"
    image: str | None = None  # a reference image to animate instead of stage 1's
    fit: str = "crop"  # how an image of another shape takes the keyframes' (media.fit_shape): crop, pad, stretch
    stages: tuple[str, ...] = STAGES
    frames: int | None = None  # keyframes (None: from seconds, else stage 2's own setting)
    seconds: float | None = None  # the video's length instead: keyframes = seconds x their rate + 1
    prompt_schedule: str | None = None  # prompt travel for stages 2-3, "0: ... | 24: ..." (travel.py)
    context_length: int | None = None  # stages 2-3's context windows (None: each stage's own setting)
    context_stride: int | None = None
    cache_interval: int | None = None  # stages 1-3's deep-feature reuse (diffusion/cache.py; None: each stage's)
    times: int = 3  # frame-rate factor of interpolation: 8 fps keyframes -> 24 fps
    fps: float | None = None  # the final video's rate instead (any: interpolation makes what it needs)
    key_fps: float | None = None  # with fps: the keyframes' rate, recorded when the run begins (stage 2's)
    t2i_steps: int | None = None  # None: each stage's own default
    t2i_guidance: float | None = None
    i2v_steps: int | None = None
    i2v_guidance: float | None = None
    v2v_steps: int | None = None
    v2v_strength: float | None = None
    width: int | None = None  # the full-resolution frames' (stage 3's); stages 1-2 scale from it (frame_sizes)
    height: int | None = None  # (both or neither; None: each stage's square size)
    t2i_size: int | None = None  # None: each stage's own size
    i2v_size: int | None = None
    v2v_size: int | None = None
    vfi_method: str | None = None  # None: the preset's (tiny: edsc, trained on its world; sd15: ifnet, for photos)
    loras: tuple[str, ...] = ()  # FILE:SCALE, fused into stages 1 and 2 (absolute paths: the manifest outlives the cwd)
    flavour: str = "web"  # plays anywhere; the run stays exact through .state/
    gif: bool = False


@dataclass
class PipelineOutput:
    frames: torch.Tensor  # the last stage's output: (3, H, W) image or (3, F, H, W) video, in [0, 1]
    paths: dict[str, Path]
    run_dir: Path
    manifest: dict = field(default_factory=dict)


def check_stages(stages: tuple[str, ...] | list[str], image: str | None) -> tuple[str, ...]:
    """The stages to run, in cascade order: known names, no gaps, none before the first needed."""
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage {unknown[0]!r}; expected some of {', '.join(STAGES)}")
    if not stages:
        raise ValueError("no stage to run")
    chosen = tuple(s for s in STAGES if s in stages)
    first = STAGES.index(chosen[0])
    if image is not None and "t2i" in chosen:
        raise ValueError("--image replaces stage 1 (t2i); leave t2i out of the stages")
    expected_first = 1 if image is not None else 0
    if first != expected_first or chosen != STAGES[first : first + len(chosen)]:
        raise ValueError(f"stages must run in order from {STAGES[expected_first]} without gaps, got {','.join(stages)}")
    return chosen


def default_run_dir(prompt: str, seed: int, root: str | os.PathLike = "runs") -> Path:
    """runs/<first words of the prompt>-seed<seed>, numbered if taken."""
    slug = "-".join(re.findall(r"[a-z0-9]+", prompt.lower())[:6]) or "video"
    base = Path(root) / f"{slug}-seed{seed}"
    path, k = base, 2
    while path.exists():
        path, k = base.with_name(f"{base.name}-{k}"), k + 1
    return path


def read_run(run_dir: str | os.PathLike) -> RunSettings:
    """The settings of a run directory, from its manifest (checked: a manifest this version did
    not write, or one edited into something else, is refused in one line)."""
    run_dir = Path(run_dir)
    if not (run_dir / MANIFEST).is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no {MANIFEST})")
    try:
        manifest = json.loads((run_dir / MANIFEST).read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{run_dir / MANIFEST} is not valid JSON ({err})") from None
    settings = manifest.get("settings") if isinstance(manifest, dict) else None
    if not isinstance(settings, dict) or not isinstance(manifest.get("stages"), dict):
        raise ValueError(f"{run_dir / MANIFEST} is not a run manifest (no settings and stages)")
    known = {f.name for f in dataclasses.fields(RunSettings)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(f"{run_dir / MANIFEST} has unknown setting(s) {unknown}")
    if not isinstance(settings.get("prompt"), str) or not isinstance(settings.get("stages", []), list):
        raise ValueError(f"{run_dir / MANIFEST} lacks a prompt or has malformed stages")
    return RunSettings(**dict(settings, stages=tuple(settings.get("stages", STAGES)),
                              loras=tuple(settings.get("loras", ()))))


def check_unedited(run_dir: Path, manifest: dict) -> None:
    """Refuse a manifest whose settings differ from those the run began with (.state/settings.json)."""
    began = run_dir / ".state" / SETTINGS
    if began.is_file():
        first, now = json.loads(began.read_text()), manifest["settings"]
        changed = sorted(k for k in set(first) | set(now) if first.get(k) != now.get(k))
        if changed:
            raise ValueError(f"{run_dir / MANIFEST} was edited since the run began ({', '.join(changed)} "
                             "differ); a resumed run keeps its own settings: start a new run instead")


def read_state(path: Path, name: str) -> torch.Tensor:
    """A stage's kept uint8 output, or a one-line error saying how to recover."""
    try:
        frames = load_file(path)["frames"]
    except Exception as err:  # safetensors' own error type, a missing key, a truncated file
        raise ValueError(f"{path} is unreadable ({type(err).__name__}); delete it to run stage {name} again") from None
    if frames.dtype != torch.uint8:
        raise ValueError(f"{path} holds {frames.dtype}, not uint8; delete it to run stage {name} again")
    return frames


def stage_frames(name: str, run: RunSettings) -> int | None:
    """How many frames a stage's output has under `run` (None: stage 1's image)."""
    if name == "vfi" and run.fps:
        return output_frames(run.frames, vfi_rate(run))
    return {"i2v": run.frames, "v2v": run.frames, "vfi": (run.frames - 1) * run.times + 1}.get(name)


def vfi_rate(run: RunSettings) -> Fraction | None:
    """Interpolation's output frames per keyframe for a run with `fps` (None: `times` decides)."""
    if not run.fps:
        return None
    return Fraction(run.fps) / Fraction(run.key_fps)  # (made exact by output_frames and the interpolator)


def check_resumable(run_dir: Path, run: RunSettings) -> None:
    """What a resume can check before loading any model: an unedited manifest, and every finished
    stage's kept output readable, 8-bit, with the frame count the settings make (its sides depend
    on the stages' own defaults and are checked once they are loaded)."""
    manifest = json.loads((run_dir / MANIFEST).read_text())
    check_unedited(run_dir, manifest)
    for name, record in manifest["stages"].items():
        path = run_dir / ".state" / f"{name}.safetensors"
        if not (isinstance(record, dict) and record.get("done") and path.is_file()):
            continue
        held = read_state(path, name)
        frames = stage_frames(name, run)
        if held.dim() != (3 if frames is None else 4) or held.shape[0] != 3 or (frames and held.shape[1] != frames):
            raise ValueError(f"{path} holds {tuple(held.shape)}, not what this run's settings make; delete it to "
                             f"run stage {name} again")


def check_settings(run: RunSettings, multiple: int) -> tuple[str, ...]:
    """What can be checked of a run without its models (`multiple`: the frame-side multiple of its
    UNet, `size_multiple`); returns the stages to run."""
    stages = check_stages(run.stages, run.image)
    check_seed(run.seed)
    check_fit(run.fit)
    if (run.width is None) != (run.height is None):
        raise ValueError("give width and height together (or neither, for each stage's square size)")
    for name in ("width", "height"):
        value = getattr(run, name)
        if value is not None and (value <= 0 or value % multiple):
            raise ValueError(f"{name} must be a positive multiple of {multiple}, got {value}")
    # each value against its stage's setting's rule (magicvideo.settings): one rule, however it is set
    check_value(I2VSettings, "frames", run.frames)  # (None: stage 2's own, or from seconds)
    if run.seconds is not None and not run.seconds > 0:
        raise ValueError(f"seconds must be positive, got {run.seconds}")
    check_value(VFISettings, "times", run.times)
    if run.fps is not None and not run.fps > 0:
        raise ValueError(f"fps must be positive, got {run.fps}")
    for stage, cls in (("t2i", T2ISettings), ("i2v", I2VSettings), ("v2v", V2VSettings)):
        for f in dataclasses.fields(RunSettings):
            if f.name.startswith(stage + "_"):
                check_value(cls, f.name[len(stage) + 1:], getattr(run, f.name), f.name.replace("_", " "))
    # (stage 1's size is checked against its own VAE's factor once it is loaded: MagicVideoPipeline.check)
    for name in ("i2v_size", "v2v_size"):
        value = getattr(run, name)
        if value is not None and value % multiple:
            raise ValueError(f"{name.replace('_', ' ')} must be a multiple of {multiple}, got {value}")
    return stages


def _quantise(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats -> uint8, rounded: what a file keeps, and what the next stage is handed."""
    # contiguous: held in memory exactly as .state/ stores it, so a resumed run sees the same layout
    # (stage 3 gives other values, off by one here and there, on a non-contiguous input)
    return (x.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().contiguous()


class MagicVideoPipeline:
    def __init__(self, t2i, i2v, v2v, vfi, preset: str = "tiny", weights: str | os.PathLike | None = None,
                 placement: Placement | None = None, loras: Sequence = ()) -> None:
        self.t2i, self.i2v, self.v2v, self.vfi, self.preset = t2i, i2v, v2v, vfi, preset
        self.loras = tuple(loras)  # what from_preset fused in, recorded in each run's manifest
        self.weights = str(weights) if weights is not None else None
        self.placement = placement or Placement()
        self.text_encoder = i2v.text_encoder

    @classmethod
    def from_preset(cls, preset: str = "tiny", weights: str | os.PathLike | None = None, vfi_method: str | None = None,
                    placement: Placement | None = None, loras: Sequence = ()) -> MagicVideoPipeline:
        """The four stages of a preset. tiny: the shipped weights; `weights` may hold any of
        t2i/, i2v/, v2v/, vfi/ (folders from the stages' save_pretrained) to use instead.
        sd15: `weights` is a folder in magicvideo.presets.sd15's layout, checked before anything loads.
        `placement`: device, dtype and memory controls (default: CPU, fp32). `loras`
        (magicvideo.formats.LoraFile): fused into stages 1 and 2 (and so 3, which shares 2's UNet)."""
        from magicvideo.presets import check_preset, load_i2v, load_t2i, load_v2v, load_vfi, sd15

        check_preset(preset, weights)
        placement = placement or Placement()
        root = Path(weights) if weights else None
        if root is not None and not root.is_dir():
            raise FileNotFoundError(f"no weights folder {root}")

        def own(name: str) -> Path | None:
            return root / name if root is not None and (root / name).is_dir() else None

        if preset == "sd15":
            sd15.check_folder(root)  # every stage's parts, before any weight loads
            t2i = load_t2i("sd15", root, placement, loras)
            i2v = load_i2v("sd15", root, placement, loras)
            sd15.share_parts(t2i, i2v, root)  # one UNet, VAE and text encoder where both stages read t2i/'s
            if placement.offload:
                t2i.place(placement)  # the offload hooks again, on the modules stage 1 now holds
        else:
            t2i = load_t2i("tiny", own("t2i"), placement, loras)
            i2v = load_i2v("tiny", own("i2v"), placement, loras)
            shared, own_text = t2i.text_encoder, i2v.text_encoder
            if type(shared) is type(own_text) and shared.max_tokens == own_text.max_tokens:
                i2v.text_encoder = shared  # one text encoder for the whole cascade
        v2v = load_v2v(preset, root if preset == "sd15" else own("v2v"), i2v=i2v)
        # the shipped EDSC head learnt the synthetic world: on photos it reads 9.8 dB under IFNet alone,
        # so sd15 interpolates with IFNet unless its folder brings an EDSC head of its own (vfi/); a
        # folder's RIFE file (vfi/flownet.pkl, from `assemble --rife`) makes it IFNet on those weights
        from magicvideo.formats import folder_rife

        rife = folder_rife(own("vfi"))
        head = own("vfi") if own("vfi") and (own("vfi") / "config.json").is_file() else None
        method = vfi_method or ("ifnet" if rife or (preset == "sd15" and not head) else "edsc")
        vfi = load_vfi(method, head, placement, rife=rife if method == "ifnet" else None)
        return cls(t2i, i2v, v2v, vfi, preset, weights, placement, loras)

    # ------------------------------------------------------------------ running
    def __call__(self, prompt: str, seed: int = 0, image: str | os.PathLike | None = None,
                 stages: tuple[str, ...] | None = None, out: str | os.PathLike | None = None,
                 progress: bool = True, **settings) -> PipelineOutput:
        """Run the cascade into `out` (default: runs/<prompt words>-seed<seed>). `settings`:
        the other fields of RunSettings (frames, t2i_steps, v2v_strength, gif, ...)."""
        if stages is None:
            stages = STAGES[1:] if image is not None else STAGES
        run = RunSettings(prompt=prompt, seed=seed, preset=self.preset, weights=self.weights,
                          dtype=self.placement.dtype, image=str(image) if image else None, stages=tuple(stages),
                          loras=tuple(map(str, self.loras)), **settings)
        return self.run(run, Path(out) if out else default_run_dir(prompt, seed), progress=progress)

    @classmethod
    def resume(cls, run_dir: str | os.PathLike, progress: bool = True,
               placement: Placement | None = None) -> PipelineOutput:
        """Finish an interrupted run: the stages marked done in its manifest are not run again. It
        loads the run's own preset, weights and dtype; `placement` may move it to another device."""
        run = read_run(run_dir)
        lock = RunLock.acquire(run_dir)  # before any model loads: a folder another run holds fails at once
        try:
            check_resumable(Path(run_dir), run)  # what the files alone can tell, before any model loads
            placement = dataclasses.replace(placement or Placement(), dtype=run.dtype)
            pipe = cls.from_preset(run.preset, run.weights, vfi_method=run.vfi_method, placement=placement,
                                   loras=[LoraFile.parse(text) for text in run.loras])
        except BaseException:
            lock.release()
            raise
        return pipe.run(run, Path(run_dir), progress=progress, resume=True, lock=lock)

    def resolved(self, run: RunSettings) -> RunSettings:
        """`run` with what the stages decide made explicit, so the manifest records it and a resume
        counts frames without them: the keyframes (from `seconds` at the keyframes' rate, else stage
        2's own count) and, where a rate or length is asked for, the keyframes' rate."""
        if (run.fps or run.seconds) and run.key_fps is None:
            run = dataclasses.replace(run, key_fps=self.i2v.settings.fps)
        frames = run.frames or self.i2v.settings.frames
        if run.seconds is not None:
            check_settings(run, self.i2v.size_multiple())  # a bad length fails in its own words
            frames = round(run.seconds * run.key_fps) + 1
            if run.frames is not None and run.frames != frames:  # (a resumed run has both, and they agree)
                raise ValueError(f"give frames or seconds, not both ({run.seconds:g} s at {run.key_fps:g} fps "
                                 f"are {frames} keyframes)")
        return dataclasses.replace(run, frames=frames)

    def check(self, run: RunSettings) -> tuple[tuple[str, ...], torch.Tensor | None]:
        """Everything that can be wrong with a run, before any stage runs."""
        if is_blank(run.prompt):
            raise PromptError("the prompt is empty")
        if tuple(run.loras) != tuple(map(str, self.loras)):
            raise ValueError(f"the run names the LoRAs {list(run.loras)}, this pipeline fused "
                             f"{[str(lora) for lora in self.loras]}")
        self.text_encoder.check([run.prompt])
        if run.prompt_schedule:
            schedule = PromptSchedule.parse(run.prompt_schedule)
            schedule.check(run.frames)
            self.text_encoder.check(schedule.prompts)
        stages = check_settings(run, self.i2v.size_multiple())
        sizes = self.frame_sizes(run)  # (sides that do not scale evenly fail here)
        factor = vae_factor(self.t2i.pipeline.vae if hasattr(self.t2i, "pipeline") else self.t2i.vae)
        if "t2i" in stages and any(side % factor for side in sizes["t2i"]):
            raise ValueError(f"t2i size must be a positive multiple of {factor} (its VAE's factor), "
                             f"got {'x'.join(map(str, sizes['t2i'][::-1]))}")
        for name in ("i2v", "v2v"):
            if name in stages:
                self.i2v.check_frame(*sizes[name])  # (stage 3 shares stage 2's UNet and VAE)
        if "v2v" in stages and any(a < b for a, b in zip(sizes["v2v"], sizes["i2v"], strict=True)):
            raise ValueError(f"v2v size {sizes['v2v'][0]} is below the i2v size {sizes['i2v'][0]}")
        return stages, fit_shape(read_image(run.image), *sizes["i2v"], run.fit) if run.image else None

    def run(self, run: RunSettings, run_dir: Path, progress: bool = True, resume: bool = False,
            lock: RunLock | None = None) -> PipelineOutput:
        """Run (or with `resume`, finish) `run` in `run_dir`, holding the folder's lock throughout
        (`lock`: one taken already, as the CLI does before loading models; released here)."""
        run = self.resolved(run)
        kept = run_dir / FILES["t2i"]
        if resume and run.image and kept.is_file():
            # the copy the run made of its --image, not the outside file, which may be gone or changed
            run = dataclasses.replace(run, image=str(kept))
        try:
            stages, image = self.check(run)
            if lock is None:
                lock = RunLock.acquire(run_dir) if resume else RunLock.claim(run_dir)
        except BaseException:
            if lock is not None:
                lock.release(abandon=not resume)
            raise
        try:
            return self._run(run, run_dir, stages, image, progress, resume)
        except BaseException:
            lock.release(abandon=not resume and not (run_dir / MANIFEST).exists())
            raise
        finally:
            lock.release()

    def _run(self, run: RunSettings, run_dir: Path, stages: tuple[str, ...], image: torch.Tensor | None,
             progress: bool, resume: bool) -> PipelineOutput:
        state = run_dir / ".state"
        if resume:
            manifest = json.loads((run_dir / MANIFEST).read_text())
            self._check_resume(run_dir, manifest)
        else:
            manifest = self._new_manifest(run)
            with atomic_path(state / SETTINGS) as tmp:  # what the run began with, to check a resume against
                tmp.write_text(json.dumps(manifest["settings"], indent=2) + "\n")
            self._save_manifest(run_dir, manifest)  # from here on the folder is a run that resumes
        cond = self.i2v.encode_prompt(run.prompt)
        travel = PromptSchedule.parse(run.prompt_schedule) if run.prompt_schedule else None
        held: dict[str, torch.Tensor] = {}  # uint8 outputs of the stages so far
        paths: dict[str, Path] = {}
        if image is not None:
            held["t2i"] = _quantise(image)
            paths["t2i"] = self._write("t2i", held["t2i"], run_dir, run)
        for i, name in enumerate(stages):
            record = manifest["stages"].get(name, {})
            if record.get("done") and (state / f"{name}.safetensors").is_file():
                held[name] = self._load_state(state / f"{name}.safetensors", name, run)
                paths[name] = run_dir / FILES[name]
                if progress:
                    print(f"stage {i + 1}/{len(stages)} {name}: done before, kept", file=sys.stderr)
                continue
            if progress:
                print(f"stage {i + 1}/{len(stages)} {name}", file=sys.stderr)
            began = time.perf_counter()
            result = _quantise(self._stage(name, run, travel if travel and name != "t2i" else cond, held, progress))
            held[name] = result
            with atomic_path(state / f"{name}.safetensors") as tmp:
                save_file({"frames": result.contiguous()}, tmp)
            paths[name] = self._write(name, result, run_dir, run)
            manifest["stages"][name] = {"done": True, "seconds": round(time.perf_counter() - began, 3),
                                        "file": FILES[name]}
            self._save_manifest(run_dir, manifest)
        last = stages[-1]
        if run.gif and last != "t2i":
            paths["gif"] = write_video(run_dir / "final.gif", held[last].float() / 255, self._fps(last, run))
        return PipelineOutput(held[last].float() / 255, paths, run_dir, manifest)

    def _stage(self, name: str, run: RunSettings, cond, held: dict[str, torch.Tensor], progress: bool) -> torch.Tensor:
        seed = run.seed
        if name == "t2i":  # our T2I reads the shared embedding; a diffusers pipeline encodes its own
            from magicvideo.stages.t2i import DiffusersTextToImage

            prompt = run.prompt if isinstance(self.t2i, DiffusersTextToImage) else cond
            height, width = self.frame_sizes(run)["t2i"]
            out = self.t2i(prompt, seed=seed, steps=run.t2i_steps, guidance=run.t2i_guidance, height=height,
                           width=width, progress=progress, cache_interval=run.cache_interval)
            if any(out.flagged):
                print("note: the stage-1 pipeline's safety checker flagged the reference and blacked it out",
                      file=sys.stderr)
            return out.images[0]
        reference = held["t2i"].float() / 255
        if name == "i2v":
            height, width = self.frame_sizes(run)["i2v"]
            return self.i2v(cond, reference, seed=seed, frames=run.frames, steps=run.i2v_steps,
                            guidance=run.i2v_guidance, height=height, width=width, progress=progress,
                            context_length=run.context_length, context_stride=run.context_stride,
                            cache_interval=run.cache_interval).frames[0]
        if name == "v2v":
            height, width = self.frame_sizes(run)["v2v"]
            return self.v2v(cond, held["i2v"].float() / 255, reference, seed=seed, steps=run.v2v_steps,
                            strength=run.v2v_strength, height=height, width=width, progress=progress,
                            context_length=run.context_length, context_stride=run.context_stride,
                            cache_interval=run.cache_interval).frames[0]
        return self.vfi(held["v2v"].float() / 255, times=run.times, progress=progress, rate=vfi_rate(run)).frames

    def _fps(self, name: str, run: RunSettings) -> float:
        fps = self.i2v.settings.fps  # the keyframes' rate: the clips the motion module learnt from
        if name == "vfi":
            return run.fps or fps * run.times
        return fps

    def _write(self, name: str, frames: torch.Tensor, run_dir: Path, run: RunSettings) -> Path:
        path = run_dir / FILES[name]
        if name == "t2i":
            return write_image(path, frames.float() / 255)
        return write_video(path, frames.float() / 255, self._fps(name, run), run.flavour)

    def frame_sizes(self, run: RunSettings) -> dict[str, tuple[int, int]]:
        """(height, width) of each stage's frames under `run` (interpolation's are stage 3's): each
        stage's square size, or with `width` and `height`, stage 3's frames that size and stages
        1-2's scaled from them by the ratio of their sides (sd15: keyframes at half, the reference
        as large as them)."""
        sides = {"t2i": run.t2i_size or self.t2i.settings.size, "i2v": run.i2v_size or self.i2v.settings.size,
                 "v2v": run.v2v_size or self.v2v.settings.size}
        if run.width is None:
            sizes = {name: (side, side) for name, side in sides.items()}
            return dict(sizes, vfi=sizes["v2v"])
        sizes = {"v2v": (run.height, run.width)}
        for name, over in (("i2v", "v2v"), ("t2i", "i2v")):
            ratio = Fraction(sides[name], sides[over])
            scaled = tuple(side * ratio for side in sizes[over])
            if any(side.denominator != 1 for side in scaled):
                raise ValueError(f"{run.width}x{run.height} scales to {float(scaled[1]):g}x{float(scaled[0]):g} at "
                                 f"stage {name} (its side {sides[name]} to {sides[over]}): give sides that divide")
            sizes[name] = tuple(int(side) for side in scaled)
        return dict(sizes, vfi=sizes["v2v"])

    def _expected_shape(self, name: str, run: RunSettings) -> tuple[int, ...]:
        """The shape of a stage's uint8 output under this run's settings."""
        size = self.frame_sizes(run)[name]
        return (3, *size) if name == "t2i" else (3, stage_frames(name, run), *size)

    def _load_state(self, path: Path, name: str, run: RunSettings) -> torch.Tensor:
        frames = read_state(path, name)
        want = self._expected_shape(name, run)
        if frames.dtype != torch.uint8 or tuple(frames.shape) != want:
            raise ValueError(f"{path} holds {frames.dtype} {tuple(frames.shape)}, not the uint8 {want} this run's "
                             f"settings make; delete it to run stage {name} again")
        return frames

    def _check_resume(self, run_dir: Path, manifest: dict) -> None:
        """Refuse a manifest edited since the run began; match the thread count it began with (the
        CPU's results differ in the last bit between counts); drop a kill's half-written files."""
        check_unedited(run_dir, manifest)
        threads = manifest.get("versions", {}).get("threads")
        if threads and threads != torch.get_num_threads():
            print(f"resume: using {threads} CPU threads, as the run began (this process had "
                  f"{torch.get_num_threads()}), so its bytes stay those of an uninterrupted run", file=sys.stderr)
            torch.set_num_threads(threads)
        for leftover in (*run_dir.glob(".*.partial*"), *(run_dir / ".state").glob(".*.partial*")):
            leftover.unlink(missing_ok=True)

    # ------------------------------------------------------------------ manifest
    def _new_manifest(self, run: RunSettings) -> dict:
        import diffusers

        from magicvideo import __version__

        return {"settings": dataclasses.asdict(run), "stages": {},
                "versions": {"magicvideo": __version__, "torch": torch.__version__,
                             "diffusers": diffusers.__version__, "threads": torch.get_num_threads()}}

    @staticmethod
    def _save_manifest(run_dir: Path, manifest: dict) -> None:
        with atomic_path(run_dir / MANIFEST) as tmp:
            tmp.write_text(json.dumps(manifest, indent=2) + "\n")
