"""Prompt templates are data files with named `{slots}`; filling one with a slot missing is an error."""

from __future__ import annotations

import re
import string
from functools import lru_cache
from pathlib import Path

from .paths import resource_path


class TemplateError(KeyError):
    """A template that cannot be filled (a slot without a value, a malformed slot), with its file."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


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
    """Names of the `{slots}` in a template (`{a.b}` and `{a[0]}` count as slot `a`)."""
    names = set()
    for _, f, _, _ in string.Formatter().parse(text):
        if f is not None:
            names.add(re.split(r"[.\[]", f, maxsplit=1)[0])
    return names


def fill(name_or_path: str | Path, **values: object) -> str:
    """Fill a template; every slot must be given (extra values are allowed)."""
    path = template_path(name_or_path)
    text = _read(str(path))
    try:
        names = slots(text)
    except ValueError as exc:  # an unmatched brace: literal braces must be doubled ({{ }})
        raise TemplateError(f"{path}: malformed template ({exc}); write literal braces as {{{{ and }}}}") from None
    bad = sorted(n for n in names if not n.isidentifier())
    if bad:
        raise TemplateError(f"{path}: slots must be names, found {bad}; write literal braces as {{{{ and }}}}")
    missing = names - set(values)
    if missing:
        raise TemplateError(f"{path}: slots without a value: {sorted(missing)}")
    return text.format(**{k: ("" if v is None else v) for k, v in values.items()})


def system_prompt(profile: str | None, situation: str | None, template: str | Path = "system", profile_words: int | None = None) -> str:
    """The one system prompt used identically in build, train, eval, chat and serve.

    `profile_words` keeps the profile's first N words: every prompt token is paid again in every
    training example, so a compact training profile caps it.
    """
    return PromptProfile.named(template, profile_words).render(profile, situation)


def clip_words(text: str, limit: int | None) -> str:
    words = text.split()
    if limit is None or len(words) <= limit:
        return text
    return " ".join(words[:limit]) + " ..."


PROFILE_FILE = "kardia_prompt.json"


class PromptProfile:
    """The system prompt a model was trained with, saved in its folder so eval, chat and serve send exactly it."""

    def __init__(self, template_text: str, profile_words: int | None = None, source: str = ""):
        self.template_text = template_text
        self.profile_words = profile_words
        self.source = source

    @classmethod
    def named(cls, template: str | Path = "system", profile_words: int | None = None) -> "PromptProfile":
        path = template_path(template)
        return cls(_read(str(path)), profile_words, str(path))

    def render(self, profile: str | None, situation: str | None) -> str:
        text = self.template_text
        where = self.source or "(prompt profile)"
        try:
            extra = slots(text) - {"profile", "situation"}
        except ValueError as exc:
            raise TemplateError(f"{where}: malformed template ({exc}); write literal braces as {{{{ and }}}}") from None
        if extra:
            raise TemplateError(f"{where}: slots without a value: {sorted(extra)}")
        return text.format(
            profile=clip_words(" ".join((profile or "").split()), self.profile_words) or "(no profile given)",
            situation=(situation or "").strip() or "(not stated)",
        )

    def save(self, folder: str | Path) -> Path:
        import json

        path = Path(folder) / PROFILE_FILE
        path.write_text(json.dumps({"template_text": self.template_text, "profile_words": self.profile_words,
                                    "source": self.source}, indent=2, ensure_ascii=False), encoding="utf-8")
        return path

    @classmethod
    def for_model(cls, model: str | None) -> "PromptProfile":
        """The profile saved with a trained model folder, else the default full system prompt."""
        import json

        if model and not str(model).startswith("openai:"):
            path = Path(str(model)) / PROFILE_FILE
            if path.is_file():
                try:
                    data = json.loads(path.read_text(encoding="utf-8"))
                    return cls(str(data["template_text"]), data.get("profile_words"), str(path))
                except (ValueError, KeyError, TypeError) as exc:
                    raise TemplateError(f"{path}: not a valid prompt profile ({exc!r})") from None
        return cls.named("system")
