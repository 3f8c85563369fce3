"""One guarded reply: the order of a turn's highest-stakes steps, written once for `kardia chat` and `kardia serve`.

1. the crisis guard reads the user message (with its history);
2. at risk: the policy's safe reply, and the model is NOT called (so it cannot override it);
3. else the model generates, and only the response span is kept (`kardia.spans.visible_response`);
4. the output check replaces a reply that carries method or means content;
5. the turn is labelled: which layer fired, the emotion the model named.

Chat runs each step in line; serve runs them its own way (the guard in a thread or the guard process, an
async model call, the output check in a thread). So the order lives in one generator, `_steps`, that yields
the step it needs and is sent the result; `reply` (sync) and `areply` (async) only drive it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Generator, Optional

from .emotions import normalize
from .spans import ParsedSpans, parse, visible_response


@dataclass(frozen=True)
class Check:
    """Step 1: assess the user message and its history (the result has `at_risk`)."""

    message: str
    history: list[dict]


@dataclass(frozen=True)
class Generate:
    """Step 3: call the model (the result has `text`)."""


@dataclass(frozen=True)
class CheckOutput:
    """Step 4: check the visible reply (the result is a replacement text, or None when it is safe)."""

    visible: str


@dataclass
class GuardedReply:
    """What the person sees and how it came about."""

    shown: str
    assessment: Any = None  # None: no guard ran
    completion: Any = None  # None: the model was not called
    parsed: Optional[ParsedSpans] = None
    output_replaced: bool = False

    @property
    def at_risk(self) -> bool:
        return bool(getattr(self.assessment, "at_risk", False))

    @property
    def fired(self) -> Optional[str]:
        """The layer that decided the reply: 'guard' (safe reply, no model), 'output_check', or None."""
        if self.at_risk:
            return "guard"
        return "output_check" if self.output_replaced else None

    @property
    def emotion(self) -> Optional[str]:
        """The ED label of the emotion the model named (None: no model answer, or not one clear label)."""
        return normalize(self.parsed.emotion) if self.parsed is not None and self.parsed.emotion else None

    @property
    def for_model(self) -> str:
        """What the model sees of this turn next time: its real answer when well formed and shown as it
        was; otherwise only what the person saw."""
        if self.parsed is not None and self.parsed.ok and not self.output_replaced:
            return self.completion.text
        return self.shown


def _steps(message: str, history: list[dict], crisis_reply: Callable[[Any], str]) -> Generator[Any, Any, GuardedReply]:
    """The order of steps (see the module doc); sent each step's result."""
    assessment = yield Check(message, list(history))
    if assessment is not None and assessment.at_risk:
        return GuardedReply(shown=crisis_reply(assessment), assessment=assessment)
    completion = yield Generate()
    parsed = parse(completion.text)
    visible = visible_response(completion.text)
    replacement = yield CheckOutput(visible)
    return GuardedReply(
        shown=visible if replacement is None else replacement,
        assessment=assessment,
        completion=completion,
        parsed=parsed,
        output_replaced=replacement is not None,
    )


def reply(
    message: str,
    history: list[dict],
    *,
    generate: Callable[[], Any],
    check: Optional[Callable[[str, list[dict]], Any]] = None,
    crisis_reply: Optional[Callable[[Any], str]] = None,
    check_output: Optional[Callable[[str], Optional[str]]] = None,
) -> GuardedReply:
    """One guarded turn, each step run in line. `check` None: no guard (chat's --no-guard); `check_output`
    None: no output check. A model error propagates (nothing was shown)."""
    if check is not None and crisis_reply is None:
        raise TypeError("a guard check needs its crisis_reply")
    steps = _steps(message, history, crisis_reply or _never)
    step = next(steps)
    try:
        while True:
            if isinstance(step, Check):
                result = check(step.message, step.history) if check is not None else None
            elif isinstance(step, Generate):
                result = generate()
            else:
                result = check_output(step.visible) if check_output is not None else None
            step = steps.send(result)
    except StopIteration as done:
        return done.value


async def areply(
    message: str,
    history: list[dict],
    *,
    check: Callable[[str, list[dict]], Awaitable[Any]],
    crisis_reply: Callable[[Any], str],
    generate: Callable[[], Awaitable[Any]],
    check_output: Callable[[str], Awaitable[Optional[str]]],
) -> GuardedReply:
    """`reply` for async callers (serve: the guard is always on). A step may raise to answer the request
    otherwise (serve: a context-length 400 or a model-error 502 from `generate`)."""
    steps = _steps(message, history, crisis_reply)
    step = next(steps)
    try:
        while True:
            if isinstance(step, Check):
                result = await check(step.message, step.history)
            elif isinstance(step, Generate):
                result = await generate()
            else:
                result = await check_output(step.visible)
            step = steps.send(result)
    except StopIteration as done:
        return done.value


def _never(assessment: Any) -> str:
    raise AssertionError("no guard ran, so no crisis reply is due")
