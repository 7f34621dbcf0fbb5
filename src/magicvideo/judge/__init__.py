"""The judge: attributes and temporal metrics read back off frames, scored against ground truth."""

from magicvideo.errors import PromptError
from magicvideo.judge.files import judge_path, judge_world_folder
from magicvideo.judge.judge import ClipReading, Expected, ObjectReading, aggregate, read_clip, score_clip
from magicvideo.judge.prompt import parse_prompt

__all__ = [
    "ClipReading", "Expected", "ObjectReading", "PromptError", "aggregate", "judge_path",
    "judge_world_folder", "parse_prompt", "read_clip", "score_clip",
]
