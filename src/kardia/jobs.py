"""The one resumable job runner behind build, eval, pairwise, judge scoring and calibration.

Each of those commands is a loop over keyed items whose results go to a JSONL file; written once here
so a command supplies only its loop body (`work(item) -> record`):

- items are pulled lazily and kept up to `concurrency` in flight (never all items or all results in
  memory); each record is appended as soon as it is done (`records.JsonlAppender`: flush + fsync);
- keys already in the output (`records.done_keys`) are skipped, so a killed run resumes;
- a failure's kind decides its fate: a record the body returns for a failure (an unparseable judge
  answer) is written and counted; an exception of a `retry_on` kind (a call that did not reach the
  model) leaves the item out, so the next run retries it; any other exception stops the run;
- one progress bar; one run-identity check (a run file in OUT that a resume must match).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Hashable, Iterable, TypeVar

from .records import JsonlAppender, done_keys

T = TypeVar("T")
_END = object()  # the items are exhausted (an item may itself be None)


class RetryLater(Exception):
    """The item failed in a way the next run should retry (its record is not written)."""


class RunMismatch(ValueError):
    """The output folder holds a different run than the one asked for."""


@dataclass
class JobStats:
    """What one run did: records written (of them, failures counted as such) and items left to retry."""

    already_done: int = 0
    written: int = 0
    recorded_failures: int = 0
    retried: list[tuple[Hashable, str]] = field(default_factory=list)


class JobBar:
    """One rich progress bar for every job: `label`, done/total, elapsed, remaining, extra `fields`."""

    def __init__(self, label: str, total: int | None, completed: int = 0, enabled: bool = True,
                 description: str = "", fields: Callable[[], dict[str, Any]] | None = None, extra: str = ""):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        columns = [TextColumn(f"[bold]{label}[/] {{task.description}}"), BarColumn(), MofNCompleteColumn()]
        if extra:
            columns.append(TextColumn(extra))
        columns += [TimeElapsedColumn(), TimeRemainingColumn()]
        self._fields = fields or (lambda: {})
        self.progress = Progress(*columns, disable=not enabled, transient=False)
        self.task = self.progress.add_task(description, total=total, completed=completed, **self._fields())

    def advance(self) -> None:
        self.progress.update(self.task, advance=1, **self._fields())

    def __enter__(self) -> "JobBar":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)


async def run_jobs(
    items: Iterable[T],
    work: Callable[[T], Awaitable[Any]],
    out: JsonlAppender,
    *,
    key: Callable[[T], Hashable],
    done: set | None = None,
    record_key: str = "id",
    concurrency: int = 64,
    retry_on: tuple[type[BaseException], ...] = (RetryLater,),
    is_failure: Callable[[Any], bool] | None = None,
    ordered: bool = False,
    bar: JobBar | None = None,
) -> JobStats:
    """Run `work` over the items not yet in `out`, up to `concurrency` at a time; see the module docstring.

    `done` defaults to the `record_key` values already in `out`'s file. `ordered`: records are written
    in the items' order (else as they finish).
    """
    done = done_keys(out.path, record_key) if done is None else done
    stats = JobStats(already_done=len(done))
    pending: dict[asyncio.Task, Hashable] = {}  # in submission order (dicts keep it)
    todo = (item for item in items if key(item) not in done)
    exhausted = False
    lock = asyncio.Lock()

    async def write(record: Any) -> None:
        async with lock:  # one writer at a time; the fsync runs off the event loop
            await asyncio.to_thread(out.write, record)
        stats.written += 1
        stats.recorded_failures += int(bool(is_failure and is_failure(record)))
        if bar is not None:
            bar.advance()

    async def one(item: T) -> Any:
        record = await work(item)
        if not ordered:  # written by the item's own task, so a finished item never waits for another's write
            await write(record)
        return record

    try:
        while True:
            while not exhausted and len(pending) < max(1, concurrency):
                item = next(todo, _END)
                if item is _END:
                    exhausted = True
                    break
                pending[asyncio.ensure_future(one(item))] = key(item)
            if not pending:
                return stats
            running = [t for t in pending if not t.done()]  # ordered: done ones may wait for an earlier one
            if running:
                await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            finished = [t for t in pending if t.done()]
            stop = next((t for t in finished if not isinstance(t.exception(), (type(None), *retry_on))), None)
            if stop is not None:
                raise stop.exception()  # other finished tasks' exceptions were retrieved above: one error, no warnings
            if ordered:  # a record waits for those before it (it keeps its slot, so memory stays bounded)
                finished = list(itertools.takewhile(lambda t: t.done(), pending))
            for task in finished:
                item_key = pending.pop(task)
                exc = task.exception()
                if exc is not None:
                    stats.retried.append((item_key, str(exc)))
                    if bar is not None:
                        bar.advance()
                elif ordered:
                    await write(task.result())
    finally:
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)


def check_run_file(path: str | Path, identity: dict[str, Any], *, at: str | None = "identity",
                   defaults: dict[str, Any] | None = None, what: str = "run",
                   error: type[Exception] = RunMismatch,
                   normalise: dict[str, Callable[[Any], Any]] | None = None) -> dict | None:
    """The run file's content when it exists and its identity matches `identity`; None when there is none.

    `at`: the key the identity sits under in the file (None: the whole file is the identity). A key an
    older file lacks is taken at `defaults` (the behaviour before the setting existed). A mismatch
    raises `error`: resuming into a folder of another run would mix two runs' records. `normalise` maps a key
    to how an older file's value reads today (e.g. a stored "off" for no judge is None now).
    """
    path = Path(path)
    if not path.exists():
        return None
    old = json.loads(path.read_text(encoding="utf-8"))
    before = dict(old.get(at, {}) if at else old)
    for k, fn in (normalise or {}).items():
        if k in before:
            before[k] = fn(before[k])
    defaults = defaults or {}
    keys = list(identity) + [k for k in before if k not in identity and at is None]
    diff = {k: (before.get(k, defaults.get(k)), identity.get(k, defaults.get(k))) for k in keys}
    diff = {k: (a, b) for k, (a, b) in diff.items() if a != b}
    if diff:
        detail = "; ".join(f"{k}: was {a!r}, now {b!r}" for k, (a, b) in diff.items())
        raise error(f"{path}: this folder holds a different {what} ({detail}); use another --out")
    return old


def write_run_file(path: str | Path, data: dict[str, Any]) -> None:
    """Write the run file atomically (a killed write never leaves half a file)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)
