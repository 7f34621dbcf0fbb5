"""The errors magicvideo raises for bad input, each said in one line.

They are `ValueError`s, so a caller that already catches that keeps working; the CLI turns any
of them into its message and exit status 2 before work starts.
"""

from __future__ import annotations


class MagicVideoError(ValueError):
    """Input magicvideo refuses: a prompt, a file, a weights folder, a setting."""


class PromptError(MagicVideoError):
    """A prompt that cannot be used (blank, or one the judge cannot read)."""


class MediaError(MagicVideoError):
    """An image or video file that cannot be read or written as asked."""


class WeightsError(MagicVideoError):
    """A weights folder that lacks a part or holds the wrong one."""
