"""The resumable job runner: in-flight limit, done keys, failure kinds, run identity, kill and resume."""

from __future__ import annotations

import asyncio
import json

import pytest

from kardia.jobs import RetryLater, RunMismatch, check_run_file, run_jobs, write_run_file
from kardia.records import JsonlAppender, iter_jsonl


def _ids(path) -> list:
    return [r["id"] for _, r in iter_jsonl(path)]


def _run(items, work, path, **kw):
    async def go():
        with JsonlAppender(path) as app:
            return await run_jobs(items, work, app, key=lambda i: i, **kw)

    return asyncio.run(go())


def test_in_flight_limit_respected_and_items_pulled_lazily(tmp_path):
    live = {"now": 0, "max": 0}
    pulled: list[int] = []

    def items():
        for i in range(20):
            pulled.append(i)
            yield i

    async def work(i):
        live["now"] += 1
        live["max"] = max(live["max"], live["now"])
        # while 3 are in flight, no more than 3 items have been taken beyond those written
        assert len(pulled) <= i + 3
        await asyncio.sleep(0.001 * (i % 4))
        live["now"] -= 1
        return {"id": i}

    stats = _run(items(), work, tmp_path / "out.jsonl", concurrency=3)
    assert live["max"] == 3
    assert stats.written == 20 and sorted(_ids(tmp_path / "out.jsonl")) == list(range(20))


def test_done_keys_skipped(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text("".join(json.dumps({"id": i}) + "\n" for i in (0, 2, 4)))
    seen: list[int] = []

    async def work(i):
        seen.append(i)
        return {"id": i}

    stats = _run(range(6), work, path)
    assert sorted(seen) == [1, 3, 5]
    assert stats.already_done == 3 and stats.written == 3
    assert sorted(_ids(path)) == list(range(6))


def test_failure_kinds_recorded_or_retried(tmp_path):
    path = tmp_path / "out.jsonl"

    async def work(i):
        if i == 1:
            raise RetryLater("server down")
        if i == 2:
            return {"id": i, "error": "unparseable"}
        return {"id": i, "error": None}

    stats = _run(range(4), work, path, is_failure=lambda r: r["error"] is not None)
    assert stats.written == 3 and stats.recorded_failures == 1
    assert stats.retried == [(1, "server down")]
    assert sorted(_ids(path)) == [0, 2, 3]  # the retried item is left out ...

    async def work_again(i):
        return {"id": i, "error": None}

    again = _run(range(4), work_again, path)  # ... and the next run does it, and only it
    assert again.written == 1 and sorted(_ids(path)) == [0, 1, 2, 3]


def test_other_exception_stops_the_run(tmp_path):
    async def work(i):
        if i == 2:
            raise KeyError("a bug")
        await asyncio.sleep(0.01)
        return {"id": i}

    with pytest.raises(KeyError):
        _run(range(10), work, tmp_path / "out.jsonl", concurrency=2)


def test_identity_mismatch_refused(tmp_path):
    path = tmp_path / "run.json"
    assert check_run_file(path, {"model": "a"}) is None
    write_run_file(path, {"identity": {"model": "a"}, "runs": []})
    assert check_run_file(path, {"model": "a"})["runs"] == []
    with pytest.raises(RunMismatch, match="different run .*model: was 'a', now 'b'"):
        check_run_file(path, {"model": "b"})
    # a key the older file lacks is taken at its default: same default resumes, another is refused
    assert check_run_file(path, {"model": "a", "new": 1}, defaults={"new": 1}) is not None
    with pytest.raises(RunMismatch, match="new"):
        check_run_file(path, {"model": "a", "new": 2}, defaults={"new": 1})
    # a flat file (the whole file is the identity), own error type
    flat = tmp_path / "flat.json"
    write_run_file(flat, {"a": 1, "b": None})
    assert check_run_file(flat, {"a": 1, "b": None}, at=None) is not None
    with pytest.raises(RuntimeError, match="different comparison"):
        check_run_file(flat, {"a": 2, "b": None}, at=None, what="comparison", error=RuntimeError)


def test_resume_after_kill_loses_and_duplicates_nothing(tmp_path):
    """A run killed mid-way (a torn last line on disk) resumes to exactly one record per item."""
    path = tmp_path / "out.jsonl"
    stop_after = 7

    async def work(i):
        await asyncio.sleep(0.001 * (i % 3))
        return {"id": i, "text": "x" * 50}

    class Killed(BaseException):
        pass

    async def dying(i):
        if i >= stop_after:
            raise Killed()
        return await work(i)

    with pytest.raises(Killed):
        _run(range(30), dying, path, concurrency=4)
    with path.open("a") as fh:  # the process died half-way through a write
        fh.write('{"id": 29, "te')
    first = _ids_before = len(path.read_text().splitlines()) - 1
    assert 0 < first < 30
    stats = _run(range(30), work, path, concurrency=4)
    ids = _ids(path)
    assert sorted(ids) == list(range(30)) and len(ids) == len(set(ids))
    assert stats.already_done == _ids_before and stats.written == 30 - _ids_before


def test_ordered_writes_in_item_order_within_the_in_flight_limit(tmp_path):
    live = {"now": 0, "max": 0}

    async def work(i):
        live["now"] += 1
        live["max"] = max(live["max"], live["now"])
        await asyncio.sleep(0.002 * ((7 - i) % 4))  # later items often finish first
        live["now"] -= 1
        return {"id": i}

    path = tmp_path / "out.jsonl"
    stats = _run(range(12), work, path, concurrency=3, ordered=True)
    assert _ids(path) == list(range(12)) and stats.written == 12
    assert live["max"] <= 3
    unordered = tmp_path / "any.jsonl"
    _run(range(12), work, unordered, concurrency=3)
    assert sorted(_ids(unordered)) == list(range(12))
