"""Where kardia keeps things it makes once and reuses (converted models, caches)."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path


def kardia_home() -> Path:
    """The cache root: `$KARDIA_HOME`, else `~/.cache/kardia`."""
    root = os.environ.get("KARDIA_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "kardia")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def resource_path(*parts: str) -> Path:
    """A data file shipped inside the package (prompts, rubrics, samples)."""
    return Path(str(resources.files("kardia").joinpath("resources", *parts)))
