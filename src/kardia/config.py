"""Typed configuration: pydantic models that load from YAML and take `key.sub=value` overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

T = TypeVar("T", bound="KardiaConfig")


class ConfigError(ValueError):
    """A config that cannot be used, with the file and the field named."""


class KardiaConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    @classmethod
    def load(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
        """YAML file (optional) first, then each `a.b=value` override (value parsed as YAML)."""
        data: dict[str, Any] = {}
        source = "defaults"
        if path:
            source = str(path)
            p = Path(path)
            if not p.is_file():
                raise ConfigError(f"{p}: config file not found" + (" (it is a folder)" if p.is_dir() else ""))
            try:
                loaded = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
            except yaml.YAMLError as exc:
                mark = getattr(exc, "problem_mark", None)
                where = f"{p}:{mark.line + 1}" if mark is not None else str(p)
                raise ConfigError(f"{where}: not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
            if not isinstance(loaded, dict):
                raise ConfigError(f"{p}: top level must be a mapping, got {type(loaded).__name__}")
            data = loaded
        from_override: dict[str, str] = {}  # dotted key -> the override that set it (for error messages)
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override {item!r}: expected key=value (e.g. max_exchanges=4)")
            key, raw = item.split("=", 1)
            keys = [k.strip() for k in key.split(".")]
            if not all(keys):
                raise ConfigError(f"override {item!r}: empty key (expected e.g. judge.model=embedded)")
            try:
                value = yaml.safe_load(raw) if raw != "" else ""
            except yaml.YAMLError as exc:
                raise ConfigError(f"override {item!r}: value is not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
            _set_path(data, keys, value)
            from_override[".".join(keys)] = item
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = []
            for e in exc.errors():
                dotted = ".".join(str(x) for x in e["loc"])
                origin = next(
                    (o for k, o in from_override.items() if dotted == k or dotted.startswith(k + ".")), None
                )
                problems.append(f"field {dotted}: {e['msg']}" + (f" (from override {origin!r})" if origin else ""))
            raise ConfigError(f"{source}: {'; '.join(problems)}") from None

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def _set_path(data: dict, keys: list[str], value: Any) -> None:
    cur = data
    for k in keys[:-1]:
        nxt = cur.get(k)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[k] = nxt
        cur = nxt
    cur[keys[-1]] = value
