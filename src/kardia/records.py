"""Streaming JSONL in and out, crash-safe: the one mechanism behind build, judge and eval resumption.

- `iter_jsonl` streams records and names file, line and field on bad input.
- `JsonlAppender` writes one record per line with flush + fsync, and on open cuts a torn last line
  left by a killed process, so a record is either wholly there or not at all.
- `done_keys` streams a file for the keys already written, so a rerun skips finished work.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator, TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class RecordError(ValueError):
    """Bad input, located: `file:line: field X: reason`."""

    def __init__(self, path: str | Path, line: int, field: str | None, reason: str):
        self.path, self.line, self.field, self.reason = str(path), line, field, reason
        where = f"{path}:{line}"
        super().__init__(f"{where}: field {field}: {reason}" if field else f"{where}: {reason}")


def iter_jsonl(
    path: str | Path,
    model: type[M] | None = None,
    skip_bad: bool = False,
    bad: list[RecordError] | None = None,
) -> Iterator[tuple[int, Any]]:
    """Yield (line_number, record). With `skip_bad`, bad lines are appended to `bad` instead of raised."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: file not found")
    with p.open("r", encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise RecordError(p, n, None, f"not valid JSON ({exc.msg} at column {exc.colno})") from None
                if model is not None:
                    if not isinstance(obj, dict):
                        raise RecordError(p, n, None, f"expected a JSON object, got {type(obj).__name__}")
                    try:
                        obj = model.model_validate(obj)
                    except ValidationError as exc:
                        e = exc.errors()[0]
                        field = ".".join(str(x) for x in e["loc"]) or None
                        raise RecordError(p, n, field, e["msg"]) from None
            except RecordError as err:
                if not skip_bad:
                    raise
                if bad is not None:
                    bad.append(err)
                continue
            yield n, obj


def repair_torn_tail(path: str | Path) -> int:
    """Cut a last line without its newline (a write killed half-way). Returns bytes removed."""
    p = Path(path)
    if not p.exists() or p.stat().st_size == 0:
        return 0
    with p.open("rb+") as fh:
        size = fh.seek(0, os.SEEK_END)
        pos = size
        chunk = 4096
        while pos > 0:
            start = max(0, pos - chunk)
            fh.seek(start)
            data = fh.read(pos - start)
            if start + len(data) == size and data.endswith(b"\n"):
                return 0
            idx = data.rfind(b"\n")
            if idx >= 0:
                cut = start + idx + 1
                fh.truncate(cut)
                return size - cut
            pos = start
        fh.truncate(0)
        return size


class JsonlAppender:
    """Append records durably (one line each, flushed and fsynced)."""

    def __init__(self, path: str | Path, fsync: bool = True):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        repair_torn_tail(self.path)
        self._fh = self.path.open("a", encoding="utf-8")
        self.fsync = fsync

    def write(self, record: Any) -> None:
        if isinstance(record, BaseModel):
            line = record.model_dump_json()
        else:
            line = json.dumps(record, ensure_ascii=False)
        self._fh.write(line + "\n")
        self._fh.flush()
        if self.fsync:
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()

    def __enter__(self) -> "JsonlAppender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def done_keys(path: str | Path, key: str = "id") -> set:
    """Keys of the complete records already in `path` (a torn last line is ignored)."""
    p = Path(path)
    keys: set = set()
    if not p.exists():
        return keys
    with p.open("r", encoding="utf-8") as fh:
        for line in fh:
            if not line.endswith("\n"):
                break
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict) and key in obj:
                keys.add(obj[key])
    return keys
