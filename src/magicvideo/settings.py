"""A stage's settings carry their own rules: each field says its range and its help once, and the
stage's call, the cascade and the CLI all check and describe it from there.

    @dataclass
    class V2VSettings(Settings):
        strength: float = setting(0.5, "how much of the schedule runs", low=0, high=1)

`settings.merged(strength=None, steps=4)` is the stage's settings with the call's given values,
checked; `add_flags(parser, V2VSettings, ["strength"])` makes `--strength` (default None: "the
stage's"), and `check_flags(args, V2VSettings, ["strength"])` refuses a bad value before any
model loads, in the flag's words.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Self

from magicvideo.errors import MagicVideoError


@dataclass(frozen=True)
class Rule:
    """A setting's range: low <= value (<= high, or < high when open_high); None: unbounded."""

    low: float | None = None
    high: float | None = None
    open_high: bool = False

    def describe(self) -> str:
        """"at least 1", "in [0, 1)", or "" for no bound: what errors and --help both say."""
        if self.high is not None:
            return f"in [{self.low:g}, {self.high:g}{')' if self.open_high else ']'}"
        return f"at least {self.low:g}" if self.low is not None else ""

    def check(self, label: str, value: Any) -> None:
        if value is None:
            return
        below = self.low is not None and value < self.low
        above = self.high is not None and (value >= self.high if self.open_high else value > self.high)
        if below or above:
            raise MagicVideoError(f"{label} must be {self.describe()}, got {value}")


def setting(default: Any, help: str, low: float | None = None, high: float | None = None, open_high: bool = False,
            choices: tuple | None = None, flag: str | None = None, kind: type | None = None) -> Any:
    """A Settings field: its default, a help line, its range or choices, (where the CLI's flag is
    shorter than the field's name) the flag, and (where the default is None) the value's type."""
    return field(default=default, metadata={"help": help, "rule": Rule(low, high, open_high), "choices": choices,
                                            "flag": flag, "type": kind})


def _field(cls: type, name: str) -> dataclasses.Field:
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f
    raise KeyError(f"{cls.__name__} has no setting {name!r}")


def _check_field(f: dataclasses.Field, value: Any, label: str) -> None:
    choices = f.metadata.get("choices")
    if choices and value is not None and value not in choices:
        named = ", ".join(f"{c:g}" if isinstance(c, float) else str(c) for c in choices)
        raise MagicVideoError(f"{label} must be one of {named}, got {value!r}")
    if "rule" in f.metadata:
        f.metadata["rule"].check(label, value)


def check_value(cls: type, name: str, value: Any, label: str | None = None) -> None:
    """`value` for setting `name` of `cls` against its rule, or a one-line error naming `label`."""
    _check_field(_field(cls, name), value, label or name.replace("_", " "))


class Settings:
    """What every stage's Settings dataclass shares: checking itself, and merging a call's values."""

    def check(self) -> Self:
        for f in dataclasses.fields(self):
            _check_field(f, getattr(self, f.name), f.name.replace("_", " "))
        return self

    def merged(self, **given: Any) -> Self:
        """These settings with the given values (None: keep this one's), checked."""
        return dataclasses.replace(self, **{k: v for k, v in given.items() if v is not None}).check()

    @classmethod
    def from_dict(cls, values: dict) -> Self:
        """From a stage folder's JSON: unknown keys refused in one line, the values checked."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise MagicVideoError(f"unknown {cls.__name__} setting {unknown[0]!r}; expected some of "
                                  f"{', '.join(sorted(names))}")
        return cls(**values).check()


def flag_of(cls: type, name: str, prefix: str = "") -> str:
    """The CLI flag of setting `name` (with generate's stage prefix, e.g. "i2v_")."""
    short = _field(cls, name).metadata.get("flag") or name
    return "--" + (prefix + short).replace("_", "-")


def dest_of(cls: type, name: str, prefix: str = "") -> str:
    return flag_of(cls, name, prefix)[2:].replace("-", "_")


def add_flags(parser: argparse.ArgumentParser, cls: type, names: list[str] | tuple[str, ...], prefix: str = "",
              what: str | None = "the stage's") -> None:
    """One flag per setting, from its field: type, choices, help; default None, i.e. `what` (the
    loaded stage's value), or with `what` None, the field's own default."""
    for name in names:
        f = _field(cls, name)
        kind = f.metadata.get("type") or type(f.default)
        if kind is bool:
            raise TypeError(f"{cls.__name__}.{name}: a yes/no setting needs a store_true flag, not add_flags")
        bounds = f.metadata["rule"].describe() if "rule" in f.metadata else ""
        default = f"{f.default if what is None else what}" + (f", {bounds}" if bounds else "")
        parser.add_argument(flag_of(cls, name, prefix), type=kind, choices=f.metadata.get("choices"),
                            dest=dest_of(cls, name, prefix),
                            help=f"{f.metadata.get('help', name)} (default: {default})")


def given(args: argparse.Namespace, cls: type, names: list[str] | tuple[str, ...], prefix: str = "") -> dict:
    """The settings among `names` whose flags were given, by field name."""
    values = {name: getattr(args, dest_of(cls, name, prefix)) for name in names}
    return {k: v for k, v in values.items() if v is not None}


def check_flags(args: argparse.Namespace, cls: type, names: list[str] | tuple[str, ...], prefix: str = "") -> dict:
    """The given flags among `names`, each checked against its setting's rule (the error names the
    flag); returns them by field name, ready for the stage's call."""
    values = given(args, cls, names, prefix)
    for name, value in values.items():
        check_value(cls, name, value, flag_of(cls, name, prefix))
    return values


# ---------------------------------------------------------------- the stages' settings
# (here, not in the stage modules: the CLI builds its flags from them without importing a model)

# Provisional: on the v0 weights, accuracy is flat within noise over 10-40 steps and guidance
# 1-7 (benchmarks/results/t2i_quality.md); to be chosen again once the model draws shapes.
DEFAULT_STEPS = 20
DEFAULT_GUIDANCE = 4.0


def _side(name: str) -> Any:
    # the frame's sides where they differ (a non-square video at full size); a function, as each
    # sized stage has its own pair of fields
    return setting(None, f"frame {name}, for a frame that is not square (default: size)", low=1, kind=int)


def frame_size(settings: Any) -> tuple[int, int]:
    """(height, width) of a sized stage's frames: its `height` and `width` where set, else `size`."""
    return settings.height or settings.size, settings.width or settings.size


def _cache_interval() -> Any:
    # every diffusion stage's: diffusion/cache.py
    return setting(1, "compute the UNet's deep levels on one step in this many and reuse them on the others "
                   "(DeepCache: cheaper steps, approximate; 1: every step in full)", low=1, high=10)


def _sampler(trainer: str) -> Any:
    return setting("dpm++", f"dpm++ (DPM-Solver++, any UNet) or lcm (a consistency-distilled one: `magicvideo train "
                   f"{trainer}`, 1-8 steps, unguided)", choices=("dpm++", "lcm"))


@dataclass
class T2ISettings(Settings):
    size: int = setting(128, "image side, a multiple of its VAE's factor", low=1)
    width: int | None = _side("width")
    height: int | None = _side("height")
    steps: int = setting(DEFAULT_STEPS, "sampler steps", low=1)
    guidance: float = setting(DEFAULT_GUIDANCE, "classifier-free guidance scale (1 or less: none, one UNet pass a "
                              "step)")
    sampler: str = _sampler("distill")
    cache_interval: int = _cache_interval()


def _appearance_scale() -> Any:
    # stages 2 and 3 share the appearance branch; a function, as a dataclass field belongs to one class
    return setting(1.0, "weight of the appearance encoder's cross-attention (0 turns it off)", low=0)


def _context_length() -> Any:
    return setting(0, "frames the motion modules see at once: a longer clip is sampled in overlapping windows of "
                   "this many, blended (0: the motion modules' own length)", low=0)


def _context_stride() -> Any:
    return setting(4, "frames between the starts of two context windows (less: more overlap, slower)", low=1)


@dataclass
class I2VSettings(Settings):
    size: int = setting(64, "keyframe side, a multiple of the stage's UNet and VAE", low=1)
    width: int | None = _side("width")
    height: int | None = _side("height")
    frames: int = setting(16, "keyframes (beyond the motion modules' length, in context windows)", low=1, high=1024)
    steps: int = setting(20, "sampler steps", low=1)
    guidance: float = setting(4.0, "classifier-free guidance scale on the text")
    noise_prior: float = setting(0.0, "latent noise prior strength: how far the starting noise leans toward the "
                                 "reference's latent", low=0, high=1, open_high=True)
    noise_prior_decay: float = setting(0.0, "how much of that lean is gone by the last frame (0: every frame "
                                       "alike)", low=0, high=1)
    appearance_scale: float = _appearance_scale()
    motion_text_scale: float = setting(1.0, "weight of the motion modules' attention to the caption (0 turns it "
                                       "off; for a stage that has it)", low=0)
    motion_guidance: float = setting(0.0, "guidance away from the prompt's still version (--still-prompt): more "
                                     "motion, a UNet pass more per step", low=0)
    controlnet_scale: float = setting(1.0, "weight of the ControlNet's residuals (diffusers' "
                                      "controlnet_conditioning_scale)", low=0)
    fps: float = setting(8.0, "the keyframes' rate: that of the clips the motion module was trained on", low=1)
    sampler: str = _sampler("distill-i2v")
    lcm_timesteps: tuple[int, ...] | None = setting(None, "the lcm sampler's timesteps, highest first, used when "
                                                    "`steps` is their count (default: LCM's own, evenly spaced)")
    context_length: int = _context_length()
    context_stride: int = _context_stride()
    cache_interval: int = _cache_interval()

    def check(self) -> Self:
        super().check()
        plan = self.lcm_timesteps
        if plan is not None and (not plan or any(type(t) is not int for t in plan) or plan[0] > 999 or plan[-1] < 0
                                 or any(a <= b for a, b in zip(plan, plan[1:]))):
            raise MagicVideoError(f"lcm timesteps must be whole numbers from 999 down to 0, highest first, each once; "
                                  f"got {plan}")
        return self


KERNELS = ("bicubic", "bilinear")  # how back-projection upsamples its error


@dataclass
class V2VSettings(Settings):
    size: int = setting(128, "output side, a multiple of the stage's UNet and VAE", low=1)
    width: int | None = _side("width")
    height: int | None = _side("height")
    steps: int = setting(20, "sampler steps of the full schedule", low=1)
    strength: float = setting(0.5, "how much of the denoising schedule runs from the upsampled input (0: "
                              "upsample, VAE and back-projection only)", low=0, high=1)
    guidance: float = setting(1.0, "classifier-free guidance scale on the text")
    appearance_scale: float = _appearance_scale()
    back_projection: int = setting(1, "back-projection passes onto the input (0 turns it off)", low=0)
    back_projection_kernel: str = setting("bicubic", "how back-projection upsamples the error (bilinear: "
                                          "steadier; bicubic: sharper, more flicker)", choices=KERNELS)
    hold_threshold: float = setting(0.0, "keep the previous frame's detail where the input moved less than this "
                                    "(0-1 units, 4/255 = 0.0157; 0 turns it off): steadier backgrounds",
                                    low=0, high=1, flag="hold")
    context_length: int = _context_length()
    context_stride: int = _context_stride()
    cache_interval: int = _cache_interval()


FLOW_SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)  # RIFE's `scale` choices (models.ifnet reads them from here)


@dataclass
class VFISettings(Settings):
    times: int = setting(3, "frame-rate factor: times - 1 new frames in every gap", low=1)
    batch_size: int = setting(8, "new frames per model call, fewer for large frames (2 at 1080p; lower: less "
                              "memory)", low=1)
    # RIFE's `scale`: its blocks estimate the flows from 1/8 to full resolution, times this
    flow_scale: float = setting(1.0, "the resolution IFNet estimates flows at (RIFE's scale: 0.5 for 4K frames or "
                                "fast motion, 2 for small frames)", choices=FLOW_SCALES)
    # 3x the largest reading of camera motion and world motion measured (benchmarks/vfi_scene_cuts.py)
    scene_cut: float = setting(0.28, "a gap whose frames' colour histograms differ by more than this is a scene "
                               "cut: its new frames repeat the nearer frame (0: no detection)", low=0, high=1)
