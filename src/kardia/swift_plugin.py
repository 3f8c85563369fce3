"""ms-swift adapter: kardia's rewards as ms-swift reward plugins (ORM-style callables).

Importing this module does not import swift. To use the rewards in `swift rlhf --rlhf_type grpo`,
write a plugin file and pass it with `--external_plugins`:

    # kardia_swift_plugin.py
    from kardia.swift_plugin import register_swift_plugins
    register_swift_plugins(judge_model="openai:Qwen3-8B@http://127.0.0.1:8000/v1")

then `--reward_funcs kardia_format kardia_emotion kardia_rubric` (or `kardia` for the combined
reward). ms-swift calls `orm(completions, **dataset_columns)` and needs floats: a judge failure
(None in kardia) becomes NaN here (count it; never 0), which ms-swift's nan-aware aggregation skips.
"""

from __future__ import annotations

import math
from typing import Any, Sequence
from .rewards import format_reward, emotion_reward, make_rubric_reward, make_kardia_reward


def _floats(values: Sequence[float | None]) -> list[float]:
    return [math.nan if v is None else float(v) for v in values]


def _columns(kwargs: dict) -> dict:
    """ms-swift passes the dataset's `messages` (prompt turns plus, sometimes, the answer): expose them as `prompt`."""
    out = dict(kwargs)
    msgs = kwargs.get("messages")
    if "prompt" not in out and isinstance(msgs, list):
        out["prompt"] = [conv[:-1] if conv and conv[-1].get("role") == "assistant" else conv for conv in msgs]
    return out


class KardiaFormatORM:
    """ms-swift ORM: 1 when the four spans parse, else 0."""

    def __call__(self, completions: Sequence[Any], **kwargs) -> list[float]:
        return _floats(format_reward(completions, **kwargs))


class KardiaEmotionORM:
    """ms-swift ORM: 1 when the emotion span matches the dataset's `emotion` column."""

    def __call__(self, completions: Sequence[Any], **kwargs) -> list[float]:
        emotion = kwargs.pop("emotion", None)
        return _floats(emotion_reward(completions, emotion, **kwargs))


class KardiaRubricORM:
    """ms-swift AsyncORM-style rubric judge (ms-swift awaits `async __call__` plugins concurrently)."""

    judge_model = "embedded"
    options: dict = {}

    def __init__(self):
        self.reward = make_rubric_reward(self.judge_model, **self.options)

    async def __call__(self, completions: Sequence[Any], **kwargs) -> list[float]:
        return _floats(await self.reward(completions, **_columns(kwargs)))


class KardiaORM:
    """ms-swift ORM-style combined reward r = 1/3 format + 1/3 emotion + 1/3 rubric."""

    judge_model = "embedded"
    options: dict = {}

    def __init__(self):
        self.reward = make_kardia_reward(self.judge_model, **self.options)

    async def __call__(self, completions: Sequence[Any], **kwargs) -> list[float]:
        return _floats(await self.reward(completions, **_columns(kwargs)))


def plugin_classes(judge_model: str = "embedded", **options) -> dict[str, type]:
    """The plugin classes bound to one judge model (no swift import: usable and testable anywhere)."""
    rubric = type("KardiaRubricORMBound", (KardiaRubricORM,), {"judge_model": judge_model, "options": dict(options)})
    combined = type("KardiaORMBound", (KardiaORM,), {"judge_model": judge_model, "options": dict(options)})
    return {"kardia_format": KardiaFormatORM, "kardia_emotion": KardiaEmotionORM, "kardia_rubric": rubric, "kardia": combined}


def register_swift_plugins(judge_model: str = "embedded", orms: dict | None = None, **options) -> dict[str, type]:
    """Add kardia's rewards to ms-swift's `orms` registry (imports swift only now)."""
    if orms is None:
        try:
            from swift.plugin import orms as swift_orms  # type: ignore[import-not-found]
        except ImportError as exc:
            raise ImportError("ms-swift is not installed: `pip install ms-swift` to use kardia rewards as swift plugins") from exc
        orms = swift_orms
    classes = plugin_classes(judge_model, **options)
    orms.update(classes)
    return classes
