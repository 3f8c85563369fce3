"""A model is one string everywhere: `embedded`, a local folder, or `openai:MODEL@URL[,URL...]`."""

from __future__ import annotations

import os
import re
from typing import Literal

from pydantic import BaseModel


_URL_START = re.compile(r"@\s*https?://", re.IGNORECASE)
_URL_OK = re.compile(r"^https?://[^\s/,@]+(@[^\s/,@]+)?(/\S*)?$", re.IGNORECASE)


class ModelSpec(BaseModel):
    kind: Literal["embedded", "local", "openai"]
    model: str
    base_urls: list[str] = []
    api_key_env: str = "OPENAI_API_KEY"

    @property
    def display(self) -> str:
        if self.kind == "openai":
            return f"openai:{self.model}@{','.join(self.base_urls)}"
        return self.model if self.kind == "local" else "embedded"


def parse_model_string(text: str) -> ModelSpec:
    """Parse a model string; raise ValueError with the reason when it is not one.

    `openai:MODEL@URL` takes its key from `$OPENAI_API_KEY` (or the variable named by
    `openai:MODEL@URL#KEY_ENV`). Several comma-separated URLs spread the load.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("empty model string: use 'embedded', a folder path, or 'openai:MODEL@URL'")
    s = text.strip()
    if s == "embedded":
        return ModelSpec(kind="embedded", model="embedded")
    if s.startswith("openai:"):
        rest = s[len("openai:"):]
        key_env = "OPENAI_API_KEY"
        if "#" in rest:
            rest, key_env = rest.rsplit("#", 1)
            key_env = key_env.strip()
            if not key_env.isidentifier():
                raise ValueError(
                    f"model string {text!r}: {key_env!r} after '#' must name an environment variable (e.g. #MY_API_KEY)"
                )
        # split at the first '@http': model names may hold '@', URLs may too (user@host)
        at = _URL_START.search(rest)
        if at is None:
            raise ValueError(f"model string {text!r}: expected 'openai:MODEL@http://host:port/v1'")
        model, urls = rest[: at.start()].strip(), rest[at.start() + 1 :]
        base_urls = [u.strip().rstrip("/") for u in urls.split(",") if u.strip()]
        if not model or not base_urls:
            raise ValueError(f"model string {text!r}: model name and at least one base URL are required")
        for u in base_urls:
            if not _URL_OK.match(u):
                raise ValueError(f"model string {text!r}: base URL {u!r} must look like http(s)://host[:port][/path]")
        return ModelSpec(kind="openai", model=model, base_urls=base_urls, api_key_env=key_env)
    if os.path.isdir(os.path.expanduser(s)):
        return ModelSpec(kind="local", model=os.path.abspath(os.path.expanduser(s)))
    raise ValueError(
        f"model string {text!r} is neither 'embedded', an existing model folder, nor 'openai:MODEL@URL'"
    )
