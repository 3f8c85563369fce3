"""Rubrics are data: YAML files with dimensions, anchors, weights and vetoes (users add their own)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..paths import resource_path


class RubricError(ValueError):
    """A rubric file that cannot be used, with the file and the field named."""


def dimension_key(name: str) -> str:
    """`Persona Consistency` -> `persona_consistency` (the key judges answer with)."""
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


class Scale(BaseModel):
    min: int = 1
    max: int = 5

    @model_validator(mode="after")
    def _ordered(self) -> "Scale":
        if self.max <= self.min:
            raise ValueError(f"scale max ({self.max}) must be above min ({self.min})")
        return self


class Dimension(BaseModel):
    # unknown keys are errors: an unquoted comma in a YAML flow mapping ({definition: short, warm})
    # once turned half a definition into a stray key, and the critic read "short"
    model_config = ConfigDict(extra="forbid")

    name: str
    key: str = ""
    definition: str
    anchors: dict[int, str] = Field(default_factory=dict)
    weight: float = Field(1.0, ge=0)
    veto: float | None = None  # score <= veto zeroes the whole reward

    @model_validator(mode="after")
    def _key(self) -> "Dimension":
        if not self.key:
            self.key = dimension_key(self.name)
        return self


class Rubric(BaseModel):
    name: str
    description: str = ""
    kind: Literal["scores", "verdict"] = "scores"
    scale: Scale = Field(default_factory=Scale)
    dimensions: list[Dimension]
    verdicts: dict[str, str] = Field(default_factory=dict)  # verdict rubrics: label -> meaning
    source: str = ""

    @model_validator(mode="after")
    def _check(self) -> "Rubric":
        if not self.dimensions:
            raise ValueError("a rubric needs at least one dimension")
        keys = [d.key for d in self.dimensions]
        if len(set(keys)) != len(keys):
            raise ValueError(f"dimension keys must be unique, got {keys}")
        for d in self.dimensions:
            for score in d.anchors:
                if not self.scale.min <= score <= self.scale.max:
                    raise ValueError(f"dimension {d.name}: anchor {score} outside the scale {self.scale.min}-{self.scale.max}")
        if self.kind == "scores" and sum(d.weight for d in self.dimensions) <= 0:
            raise ValueError("dimension weights must not all be 0")
        if self.kind == "verdict" and not self.verdicts:
            raise ValueError("a verdict rubric needs `verdicts` (label: meaning)")
        return self

    @property
    def keys(self) -> list[str]:
        return [d.key for d in self.dimensions]

    def dimension(self, key_or_name: str) -> Dimension:
        k = dimension_key(key_or_name)
        for d in self.dimensions:
            if d.key == k or dimension_key(d.name) == k:
                return d
        raise KeyError(f"rubric {self.name}: no dimension {key_or_name!r} (has {self.keys})")

    def describe(self, keys: list[str] | None = None) -> str:
        """The rubric as text for a judge prompt: definition and anchors per dimension."""
        blocks = []
        for d in self.dimensions:
            if keys is not None and d.key not in keys:
                continue
            lines = [f"## {d.name} (key: {d.key})", d.definition.strip()]
            for score in sorted(d.anchors):
                lines.append(f"- {score}: {d.anchors[score].strip()}")
            blocks.append("\n".join(lines))
        return "\n\n".join(blocks)


def rubric_path(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.exists():
            raise RubricError(f"{p}: rubric file not found")
        return p
    shipped = resource_path("rubrics", f"{name_or_path}.yaml")
    if shipped.exists():
        return shipped
    available = sorted(x.stem for x in resource_path("rubrics").glob("*.yaml"))
    raise RubricError(f"rubric {name_or_path!r}: no such file and no shipped rubric of that name (shipped: {available})")


def load_rubric(name_or_path: str | Path | Rubric) -> Rubric:
    """A shipped rubric by name (`kardia`, `critic`) or any YAML file; errors name file and field."""
    if isinstance(name_or_path, Rubric):
        return name_or_path
    path = rubric_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RubricError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise RubricError(f"{path}: top level must be a mapping")
    try:
        rubric = Rubric.model_validate({**data, "source": str(path)})
    except ValidationError as exc:
        e = exc.errors()[0]
        field = ".".join(str(x) for x in e["loc"])
        where = f"{path}: field {field}" if field else f"{path}"
        raise RubricError(f"{where}: {e['msg']}") from None
    return rubric
