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
from typing import Any, Callable, Iterable, Iterator, TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


class RecordError(ValueError):
    """Bad input, located: `file:line: field X: reason`."""

    def __init__(self, path: str | Path, line: int, field: str | None, reason: str):
        self.path, self.line, self.field, self.reason = str(path), line, field, reason
        where = f"{path}:{line}"
        super().__init__(f"{where}: field {field}: {reason}" if field else f"{where}: {reason}")


def keep_bad(err: RecordError, skip_bad: bool, bad: list[RecordError] | None) -> None:
    """The one rule for a bad record: raise it, or with `skip_bad` keep it in `bad` (counted, never lost)."""
    if not skip_bad:
        raise err
    if bad is not None:
        bad.append(err)


def converted(
    rows: Iterable[tuple[int, Any]], convert: Callable[[int, Any], T], skip_bad: bool = False,
    bad: list[RecordError] | None = None,
) -> Iterator[T]:
    """`convert(line, row)` over (line, row) pairs; a RecordError follows `keep_bad`."""
    for line, row in rows:
        try:
            out = convert(line, row)
        except RecordError as err:
            keep_bad(err, skip_bad, bad)
            continue
        yield out


def iter_jsonl(
    path: str | Path,
    model: type[M] | None = None,
    skip_bad: bool = False,
    bad: list[RecordError] | None = None,
) -> Iterator[tuple[int, Any]]:
    """Yield (line_number, record). With `skip_bad`, bad lines are appended to `bad` instead of raised."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: file not found" + (" (it is a folder)" if p.is_dir() else ""))
    with p.open("rb") as fh:  # bytes, so a bad encoding is reported with its line, not as a crash
        for n, raw in enumerate(fh, start=1):
            try:
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise RecordError(p, n, None, f"not valid UTF-8 (byte {exc.start + 1} of the line)") from None
                if not line.strip():
                    continue
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
                        more = len(exc.errors()) - 1
                        raise RecordError(p, n, field, e["msg"] + (f" (and {more} more problems)" if more else "")) from None
            except RecordError as err:
                keep_bad(err, skip_bad, bad)
                continue
            yield n, obj


def repair_torn_tail(path: str | Path) -> int:
    """Cut a last line without its newline (a write killed half-way). Returns bytes removed.

    A last line that is complete JSON and only lacks its newline (a file written by another tool)
    is kept and given its newline: cutting it would lose a good record.
    """
    p = Path(path)
    if not p.exists() or p.stat().st_size == 0:
        return 0
    with p.open("rb+") as fh:
        size = fh.seek(0, os.SEEK_END)
        pos = size
        chunk = 4096
        cut = 0
        while pos > 0:
            start = max(0, pos - chunk)
            fh.seek(start)
            data = fh.read(pos - start)
            if start + len(data) == size and data.endswith(b"\n"):
                return 0
            idx = data.rfind(b"\n")
            if idx >= 0:
                cut = start + idx + 1
                break
            pos = start
        fh.seek(cut)
        tail = fh.read()
        if not _complete_record(tail):
            fh.truncate(cut)
            return size - cut
        fh.seek(0, os.SEEK_END)
        fh.write(b"\n")
        return 0


def _complete_record(raw: bytes) -> bool:
    """A line that parses as a JSON object or array (a torn prefix of one never does)."""
    try:
        return isinstance(json.loads(raw.decode("utf-8")), (dict, list))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False


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
    """Keys of the complete records already in `path` (a torn last line is ignored; a complete one
    missing only its newline counts, as `JsonlAppender` keeps it)."""
    p = Path(path)
    keys: set = set()
    if not p.exists():
        return keys
    # errors="replace": a line torn inside a multi-byte character must not crash the resume
    with p.open("r", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if not line.endswith("\n") and not _complete_record(line.encode("utf-8")):
                break
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict) and key in obj:
                value = obj[key]
                # lists/dicts cannot go in a set: use their canonical JSON text
                keys.add(json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else value)
    return keys
