"""On-disk response cache: repeated deterministic calls cost nothing, and a rerun resumes for free."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from pathlib import Path
from typing import Sequence

from .types import LLM, Completion, Conversation, SamplingParams, request_key


class ResponseCache:
    """A SQLite key-value store (WAL, so several processes may share one file)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._conn() as con:
            con.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value TEXT NOT NULL)")

    def _conn(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            # a small page cache per connection (one per worker thread): SQLite's 2 MiB default, filled by a
            # growing file in every thread, made peak memory grow with the data (the OS caches the file anyway)
            con.execute("PRAGMA cache_size=-256")
            self._local.con = con
        return con

    def get(self, key: str) -> Completion | None:
        row = self._conn().execute("SELECT value FROM responses WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return Completion.model_validate({**json.loads(row[0]), "cached": True})

    def put(self, key: str, completion: Completion) -> None:
        value = completion.model_dump(exclude={"cached"})
        self._conn().execute(
            "INSERT OR REPLACE INTO responses (key, value) VALUES (?, ?)", (key, json.dumps(value, ensure_ascii=False))
        )

    def __len__(self) -> int:
        return self._conn().execute("SELECT COUNT(*) FROM responses").fetchone()[0]


class CachedLLM(LLM):
    """Wraps any backend; only deterministic calls (greedy or seeded) are stored."""

    def __init__(self, inner: LLM, cache: ResponseCache):
        self.inner = inner
        self.cache = cache
        self.name = inner.name
        self.hits = 0
        self.misses = 0

    @property
    def token_probs(self) -> bool:  # the backend's capability, not the base class default
        return self.inner.token_probs

    def __getattr__(self, item):  # expose backend extras (tokenizer, model, next_token_probs)
        if item == "inner":  # not set yet (copy/pickle): avoid endless recursion
            raise AttributeError(item)
        return getattr(self.inner, item)

    async def agenerate(self, batch: Sequence[Conversation], params: SamplingParams | None = None) -> list[Completion]:
        params = params or SamplingParams()
        if not params.deterministic:
            return await self.inner.agenerate(batch, params)
        keys = [request_key(self.name, m, params) for m in batch]
        found = await asyncio.to_thread(lambda: [self.cache.get(k) for k in keys])
        missing = [i for i, c in enumerate(found) if c is None]
        self.hits += len(batch) - len(missing)
        self.misses += len(missing)
        if missing:
            fresh = await self.inner.agenerate([batch[i] for i in missing], params)
            for i, comp in zip(missing, fresh):
                found[i] = comp
                if comp.finish_reason != "error":
                    await asyncio.to_thread(self.cache.put, keys[i], comp)
        return found  # type: ignore[return-value]

    async def aclose(self) -> None:
        await self.inner.aclose()
