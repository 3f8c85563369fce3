"""The guard used wherever a model talks to a person (chat, serve): assess, reply safely, log the event.

The event log holds category, level, rule ids, timestamp and request id; never the message text or the
matched words unless the operator enables `log_text` (messages in crisis are among the most sensitive
data a service can hold).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from .assess import aassess, assess
from .policy import check_crisis_response, contains_method_content, crisis_reply, load_locale, unsafe_output_reply
from .types import RiskAssessment

log = logging.getLogger("kardia.safety")


class Guard:
    def __init__(
        self,
        locale_file: str | Path | None = None,
        log_text: bool = False,
        model: str | None = None,
        log_file: str | Path | None = None,
        patterns: str | None = None,
        semantic: bool | None = None,
        learned: bool | None = None,
    ):
        """learned: the embedding classifier (safety/learned.py); ON by default, KARDIA_SAFETY_LEARNED=0
        turns it off (patterns + context only).

        semantic: the embedding k-NN layer; off by default (KARDIA_SAFETY_SEMANTIC=1 turns it on).

        Off because it measured weak: +3 of 40 blind held-out crises, but it also flags topical look-alikes
        ("the pills my doctor gave me help") - see benchmarks/safety_eval.py --semantic. For indirect
        phrasing the patterns miss, use the model check (`model=`) with a capable model.
        """
        self.locale_file = str(locale_file) if locale_file else None
        self.locale = load_locale(self.locale_file)  # fail early on a bad locale file
        self.log_text = log_text
        self.model = model
        self.patterns = patterns
        if semantic is None:
            semantic = os.environ.get("KARDIA_SAFETY_SEMANTIC", "0").strip().lower() not in ("0", "false", "no", "off")
        self.semantic = semantic
        if learned is None:
            learned = os.environ.get("KARDIA_SAFETY_LEARNED", "1").strip().lower() not in ("0", "false", "no", "off")
        self.learned = learned
        if learned:
            from .learned import load_learned

            load_learned()  # fail early (missing encoder package or weights); the encoder loads on first use
        if semantic:
            from .semantic import load_semantic

            load_semantic()  # fail early (missing encoder package, bad example file), load lazily
        self.log_file = Path(log_file) if log_file else None
        self._lock = threading.Lock()
        self._appender = None
        self.events: list[dict] = []  # the most recent events (bounded), for tests and status pages
        self.counts = {"checked": 0, "at_risk": 0, "unsafe_output": 0, "errors": 0}

    # -- checking ---------------------------------------------------------------------------------
    def check(self, message: str, history: list[dict] | None = None, request_id: str | None = None) -> RiskAssessment:
        result = assess(message, history, model=self.model, patterns=self.patterns, semantic=self.semantic, learned=self.learned)
        self._record(result, message, request_id)
        return result

    async def acheck(
        self, message: str, history: list[dict] | None = None, request_id: str | None = None, executor: Any = None,
        patterns_only: bool = False,
    ) -> RiskAssessment:
        """`check` for async callers; `executor` runs the patterns (default: a worker thread).
        `patterns_only`: the deterministic layers alone, in milliseconds (serve: a request refused anyway)."""
        on = not patterns_only
        result = await aassess(message, history, model=self.model if on else None, patterns=self.patterns,
                               semantic=self.semantic and on, learned=self.learned and on, executor=executor)
        self._record(result, message, request_id)
        return result

    def crisis_reply(self, assessment: RiskAssessment) -> str:
        return crisis_reply(assessment, self.locale_file)

    def check_output(self, reply: str, request_id: str | None = None) -> str | None:
        """A replacement for a generated reply that carries method or means content, else None."""
        if not contains_method_content(reply):
            return None
        self.counts["unsafe_output"] += 1
        self._emit({"event": "unsafe_output", "request_id": request_id, **({"text": reply} if self.log_text else {})})
        return unsafe_output_reply(self.locale_file)

    @staticmethod
    def handles(response_text: str, assessment: RiskAssessment) -> bool:
        return check_crisis_response(response_text, assessment).ok

    # -- logging ----------------------------------------------------------------------------------
    def _record(self, result: RiskAssessment, message: str, request_id: str | None) -> None:
        self.counts["checked"] += 1
        if result.errors:
            self.counts["errors"] += 1
        if not result.at_risk and not result.errors:
            return
        event = {
            "event": "crisis" if result.at_risk else "guard_error",
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "request_id": request_id or uuid.uuid4().hex[:12],
            "category": result.category,
            "level": result.level,
            "rules": result.rules,
            "source": result.source,
            "errors": result.errors,
        }
        if result.at_risk:
            self.counts["at_risk"] += 1
        if self.log_text:
            event["text"] = message
            event["evidence"] = result.evidence
        self._emit(event)

    def _emit(self, event: dict) -> None:
        line = json.dumps(event, ensure_ascii=False)
        log.warning("kardia.safety %s", line)
        with self._lock:
            self.events.append(event)
            del self.events[:-1000]
            if self.log_file is not None:
                if self._appender is None:
                    from ..records import JsonlAppender

                    self._appender = JsonlAppender(self.log_file)
                self._appender.write(event)
