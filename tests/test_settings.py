"""A setting's rule is written once, on its field, and every layer reads it: the stage's call
(`merged`), a stage folder's JSON (`from_dict`), the cascade's run settings and the CLI's flags."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from magicvideo.cli import main
from magicvideo.errors import MagicVideoError
from magicvideo.pipeline import RunSettings, check_settings
from magicvideo.settings import (
    I2VSettings,
    T2ISettings,
    V2VSettings,
    VFISettings,
    add_flags,
    check_flags,
)

ALL = (T2ISettings, I2VSettings, V2VSettings, VFISettings)


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_every_setting_has_help_and_its_default_passes_its_rule(cls):
    for f in dataclasses.fields(cls):
        assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help line"
    assert cls().check() == cls()


def test_merged_keeps_none_refuses_out_of_range_and_names_the_setting():
    s = I2VSettings(noise_prior=0.3)
    assert s.merged(noise_prior=None, steps=4) == I2VSettings(noise_prior=0.3, steps=4)
    assert s == I2VSettings(noise_prior=0.3)  # the stage's own settings are not changed by a call
    with pytest.raises(MagicVideoError, match=r"^noise prior must be in \[0, 1\), got 1.0$"):
        s.merged(noise_prior=1.0)
    with pytest.raises(MagicVideoError, match=r"^frames must be in \[1, 1024\], got 1025$"):
        s.merged(frames=1025)
    with pytest.raises(MagicVideoError, match=r"^steps must be at least 1, got 0$"):
        T2ISettings().merged(steps=0)
    with pytest.raises(MagicVideoError, match="back projection kernel must be one of bicubic, bilinear"):
        V2VSettings().merged(back_projection_kernel="lanczos")
    assert V2VSettings().merged(strength=1.0, hold_threshold=0.0).strength == 1.0  # closed ends are inside


def test_a_stage_folder_with_an_unknown_or_bad_setting_is_refused():
    assert V2VSettings.from_dict({"strength": 0.2}).strength == 0.2
    with pytest.raises(MagicVideoError, match="unknown V2VSettings setting 'strenght'"):
        V2VSettings.from_dict({"strenght": 0.2})
    with pytest.raises(MagicVideoError, match=r"strength must be in \[0, 1\], got 2"):
        V2VSettings.from_dict({"strength": 2})


def test_flags_are_made_from_the_fields_and_checked_in_the_flags_words():
    parser = argparse.ArgumentParser()
    add_flags(parser, V2VSettings, ("strength", "hold_threshold", "back_projection_kernel"))
    add_flags(parser, VFISettings, ("times",), prefix="vfi_", what=None)
    args = parser.parse_args(["--strength", "0.25", "--hold", "0.01"])
    assert check_flags(args, V2VSettings, ("strength", "hold_threshold", "back_projection_kernel")) == {
        "strength": 0.25, "hold_threshold": 0.01}
    assert parser.parse_args([]).vfi_times is None
    assert "(default: 3, at least 1)" in parser.format_help()
    with pytest.raises(MagicVideoError, match=r"^--hold must be in \[0, 1\], got 1.5$"):
        check_flags(parser.parse_args(["--hold", "1.5"]), V2VSettings, ("hold_threshold",))
    with pytest.raises(SystemExit):  # choices come from the field too
        parser.parse_args(["--back-projection-kernel", "lanczos"])


def test_the_cascade_checks_its_run_by_the_stages_rules():
    with pytest.raises(MagicVideoError, match=r"^v2v strength must be in \[0, 1\], got 1.5$"):
        check_settings(RunSettings(prompt="a red circle", v2v_strength=1.5), 8)
    with pytest.raises(MagicVideoError, match=r"^frames must be in \[1, 1024\], got 2000$"):
        check_settings(RunSettings(prompt="a red circle", frames=2000), 8)
    with pytest.raises(MagicVideoError, match=r"^i2v steps must be at least 1, got 0$"):
        check_settings(RunSettings(prompt="a red circle", i2v_steps=0), 8)


@pytest.mark.parametrize("argv, message", [
    (["i2v", "a red star", "--image", "r.png", "-o", "o.mp4", "--noise-prior", "1"], "--noise-prior must be in [0, 1)"),
    (["v2v", "a red star", "k.mp4", "--image", "r.png", "-o", "o.mp4", "--hold", "2"], "--hold must be in [0, 1]"),
    (["interpolate", "in.mp4", "-o", "o.mp4", "--batch-size", "0"], "--batch-size must be at least 1"),
    (["generate", "a red star", "--i2v-steps", "0"], "--i2v-steps must be at least 1"),
])
def test_the_cli_refuses_a_bad_setting_in_one_line_before_any_work(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing is read or written: the check comes first
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())
