"""Typed configuration: pydantic models that load from YAML and take `key.sub=value` overrides.

One path from command line to config (`KardiaConfig.from_cli`): the YAML file, then `--set a.b=v`
overrides, then the options given on the command line as Python objects (no text round trip). One
error helper (`fail`) for every command, and one type (`OptionalModel`) for a model that may be off.
"""

from __future__ import annotations

import sys
from pathlib import Path, PurePath
from typing import Annotated, Any, Mapping, NoReturn, Sequence, TypeVar

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

T = TypeVar("T", bound="KardiaConfig")

# What a user writes for "no model here"; YAML reads off/no/false as False, which means the same.
_OFF_WORDS = ("", "none", "off", "false", "no", "null")


class ConfigError(ValueError):
    """A config that cannot be used, with the file and the field named."""


def fail(msg: object) -> NoReturn:
    """The one way a command stops on a user error: `kardia: error: MSG` on stderr, exit status 2."""
    print(f"kardia: error: {msg}", file=sys.stderr)
    sys.exit(2)


def optional_model(value: Any) -> str | None:
    """A model string, or None for none/off/false/empty (and YAML's False); True is an error."""
    if value is None or value is False:
        return None
    if value is True:
        raise ValueError("expected a model string, or 'none' or 'off' for no model (YAML reads on/yes/true as a boolean)")
    if isinstance(value, str) and value.strip().lower() in _OFF_WORDS:
        return None
    return value


# A model string that may be switched off: decided once, where the value comes in.
OptionalModel = Annotated[str | None, BeforeValidator(optional_model)]


class KardiaConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    @classmethod
    def load(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
        """YAML file (optional) first, then each `a.b=value` override (value parsed as YAML)."""
        return cls.from_cli(path, overrides)

    @classmethod
    def from_cli(
        cls: type[T],
        path: str | Path | None = None,
        overrides: Sequence[str] = (),
        options: Mapping[str, Any] | None = None,
    ) -> T:
        """YAML file, then `a.b=value` overrides, then explicit options {dotted field: value} (None: not given)."""
        data = _read_file(path) if path else {}
        origin: dict[str, str] = {}  # dotted key -> what set it (for error messages)
        for item in overrides or ():
            keys, value = _parse_override(item)
            _set_path(data, keys, value)
            origin[".".join(keys)] = f"from override {item!r}"
        for key, value in (options or {}).items():
            if value is None:
                continue
            if isinstance(value, PurePath):
                value = str(value)
            _set_path(data, key.split("."), value)
            origin[key] = f"from option {key}={value!r}"
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = []
            for e in exc.errors():
                dotted = ".".join(str(x) for x in e["loc"])
                why = next((o for k, o in origin.items() if dotted == k or dotted.startswith(k + ".")), None)
                problems.append(f"field {dotted}: {e['msg']}" + (f" ({why})" if why else ""))
            raise ConfigError(f"{path or 'defaults'}: {'; '.join(problems)}") from None

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def _read_file(path: str | Path) -> dict[str, Any]:
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
    return loaded


def _parse_override(item: str) -> tuple[list[str], Any]:
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
    return keys, value


def _set_path(data: dict, keys: list[str], value: Any) -> None:
    cur = data
    for k in keys[:-1]:
        nxt = cur.get(k)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[k] = nxt
        cur = nxt
    cur[keys[-1]] = value
