"""Prompt templates are data files with named `{slots}`; filling one with a slot missing is an error."""

from __future__ import annotations

import string
from functools import lru_cache
from pathlib import Path

from .paths import resource_path


class TemplateError(KeyError):
    pass


@lru_cache(maxsize=64)
def _read(path: str) -> str:
    return Path(path).read_text(encoding="utf-8")


def template_path(name_or_path: str | Path) -> Path:
    """A shipped template by name (`system`, `build/user_simulator`...) or any file path."""
    p = Path(name_or_path)
    if p.suffix and p.exists():
        return p
    shipped = resource_path("prompts", f"{name_or_path}.txt")
    if shipped.exists():
        return shipped
    raise FileNotFoundError(f"prompt template {name_or_path!r}: no such file, and no shipped template of that name")


def slots(text: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(text) if f}


def fill(name_or_path: str | Path, **values: object) -> str:
    """Fill a template; every slot must be given (extra values are allowed)."""
    path = template_path(name_or_path)
    text = _read(str(path))
    missing = slots(text) - set(values)
    if missing:
        raise TemplateError(f"{path}: slots without a value: {sorted(missing)}")
    return text.format(**{k: ("" if v is None else v) for k, v in values.items()})


def system_prompt(profile: str, situation: str, template: str | Path = "system") -> str:
    """The one system prompt used identically in build, train, eval, chat and serve."""
    return fill(template, profile=profile.strip() or "(no profile given)", situation=situation.strip() or "(not stated)")
