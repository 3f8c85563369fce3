"""`kardia chat`: talk with any model string in the terminal, the way a user of `kardia serve` would.

The person sees only the response span (or a warm fallback when the answer is broken); the other spans
appear, dimmed, with `--show-reasoning`. Every turn passes the crisis guard (`kardia.safety`) first unless
`--no-guard` (`kardia.guarded`: the same order of steps as `kardia serve`), and each turn is appended (flushed
and fsynced) to the `--transcript` JSONL as it happens.
Works with stdin piped too: each line is one user turn; EOF or `/quit` ends the chat.
"""

from __future__ import annotations

import json
import sys
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, TextIO

import typer
from pydantic import Field

from .config import ConfigError, KardiaConfig, OptionalModel, fail
from .llm.options import LLMOptions
from . import safety, guarded
from .emotions import normalize
from .llm import SamplingParams, load_llm, parse_model_string, LLMError
from .prompts import PromptProfile
from .records import JsonlAppender

QUIT_WORDS = frozenset({"/quit", "/exit", "/q"})


class ChatInputError(ValueError):
    """A chat option that cannot be used (a profile file without `person`, ...), located."""


def read_profile(path: str | Path) -> tuple[str, str | None]:
    """(profile text, situation or None). A JSON object gives its `person` (and `situation`) field;
    any other file is the profile text itself."""
    p = Path(path)
    if not p.is_file():
        raise ChatInputError(f"{p}: profile file not found")
    text = p.read_text(encoding="utf-8")
    looks_json = p.suffix.lower() == ".json" or text.lstrip().startswith("{")
    if not looks_json:
        return text.strip(), None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        if p.suffix.lower() == ".json":
            raise ChatInputError(f"{p}:{exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        return text.strip(), None
    if not isinstance(obj, dict):
        raise ChatInputError(f"{p}: expected a JSON object with a 'person' field, got {type(obj).__name__}")
    person = obj.get("person")
    if not isinstance(person, str) or not person.strip():
        raise ChatInputError(f"{p}: field person: missing or not a non-empty string")
    situation = obj.get("situation")
    return person.strip(), situation.strip() if isinstance(situation, str) and situation.strip() else None


def load_guard(enabled: bool, model: str | None = None, locale_file: str | Path | None = None) -> tuple[Any, Any, str]:
    """(guard, safety module, state) with state 'on' or 'off'."""
    if not enabled:
        return None, None, "off"

    kwargs: dict[str, Any] = {}
    if model:
        kwargs["model"] = model
    if locale_file:
        kwargs["locale_file"] = locale_file
    return safety.Guard(**kwargs), safety, "on"


@dataclass
class TurnResult:
    user: str
    shown: str
    raw: str | None = None
    parsed: Any = None
    guard: dict | None = None
    error: str | None = None
    completion: Any = None
    output_replaced: bool = False


@dataclass
class ChatSession:
    """One conversation: system prompt, history, guard, transcript. `turn(text)` answers one message."""

    llm: Any
    system: str
    params: Any
    model_name: str = ""
    guard: Any = None
    safety: Any = None
    transcript: Any = None  # kardia.records.JsonlAppender or None
    session_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    history: list[dict] = field(default_factory=list)  # what the model sees (four-span answers)
    shown_history: list[dict] = field(default_factory=list)  # what the person saw
    turns: int = 0
    errors: int = 0

    def start(self, guard_state: str) -> None:
        if self.transcript is not None:
            self.transcript.write(
                {
                    "type": "session",
                    "session": self.session_id,
                    "time": _now(),
                    "model": self.model_name,
                    "system": self.system,
                    "params": self.params.model_dump(),
                    "guard": guard_state,
                }
            )

    def turn(self, user_text: str) -> TurnResult:
        self.turns += 1
        result = TurnResult(user=user_text, shown="")
        messages = [{"role": "system", "content": self.system}, *self.history, {"role": "user", "content": user_text}]
        g = self.guard

        def check(message: str, history: list[dict]):
            assessment = g.check(message, history)
            result.guard = _assessment_dict(assessment)  # recorded even when the model then fails
            return assessment

        try:
            r = guarded.reply(
                user_text,
                self.shown_history,
                generate=lambda: self.llm.chat(messages, self.params),
                check=check if g is not None else None,
                crisis_reply=(getattr(g, "crisis_reply", None) or self.safety.crisis_reply) if g is not None else None,
                check_output=getattr(g, "check_output", None) if g is not None else None,
            )
        except LLMError as exc:
            self.errors += 1
            result.error = str(exc)
            self._record(result, None)
            return result  # the failed exchange is not added to the history
        result.shown, result.parsed, result.completion = r.shown, r.parsed, r.completion
        result.raw = r.completion.text if r.completion is not None else None
        result.output_replaced = r.output_replaced
        self.history += [{"role": "user", "content": user_text}, {"role": "assistant", "content": r.for_model}]
        self.shown_history += [{"role": "user", "content": user_text}, {"role": "assistant", "content": result.shown}]
        self._record(result, r.emotion)
        return result

    def _record(self, r: TurnResult, label: str | None) -> None:
        if self.transcript is None:
            return
        c = r.completion
        self.transcript.write(
            {
                "type": "turn",
                "session": self.session_id,
                "turn": self.turns,
                "time": _now(),
                "model": self.model_name,
                "user": r.user,
                "shown": r.shown,
                "raw": r.raw,
                "spans": r.parsed.as_dict() if r.parsed is not None else None,
                "format_ok": r.parsed.ok if r.parsed is not None else None,
                "problems": r.parsed.problems if r.parsed is not None else [],
                "emotion_label": label,
                "guard": r.guard,
                "output_replaced": r.output_replaced,
                "finish_reason": getattr(c, "finish_reason", None),
                "prompt_tokens": getattr(c, "prompt_tokens", None),
                "completion_tokens": getattr(c, "completion_tokens", None),
                "cached": getattr(c, "cached", None),
                "error": r.error,
            }
        )


def _assessment_dict(a: Any) -> dict:
    if hasattr(a, "model_dump"):
        d = a.model_dump(mode="json")
    elif hasattr(a, "__dataclass_fields__"):
        import dataclasses

        d = dataclasses.asdict(a)
    else:
        d = {k: getattr(a, k, None) for k in ("category", "level", "evidence")}
    d["at_risk"] = bool(getattr(a, "at_risk", False))
    return d


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _lines(stream: TextIO, console) -> Iterator[str]:
    """User turns: prompted when interactive, one per line when piped."""
    if stream.isatty():
        while True:
            try:
                yield console.input("[bold cyan]you>[/] ")
            except (EOFError, KeyboardInterrupt):
                console.print()
                return
    else:
        for line in stream:
            yield line.rstrip("\n")


def _reasoning_panel(result: TurnResult):
    from rich.panel import Panel
    from rich.text import Text


    body = Text(style="dim")
    p = result.parsed
    if p is None:
        body.append("(no model answer: the crisis guard replied)" if result.guard else "(no answer)")
    else:
        for i, name in enumerate(("understanding", "reasoning", "emotion")):
            value = getattr(p, name)
            if i:
                body.append("\n")
            body.append(f"{name}: ", style="dim bold")
            body.append(value if value is not None else "(missing)")
            if name == "emotion" and value:
                body.append(f"  -> label: {normalize(value) or 'none (not one clear ED label)'}")
        if p.problems:
            body.append("\nformat problems: ", style="dim bold")
            body.append("; ".join(p.problems))
            body.append("\nraw output: ", style="dim bold")
            body.append(result.raw or "")
    if result.guard:
        body.append(f"\nguard: {result.guard.get('level')} {result.guard.get('category') or ''}".rstrip())
    return Panel(body, title="hidden from the person", title_align="left", border_style="dim", style="dim")


class ChatConfig(KardiaConfig):
    """Everything one chat session depends on: `--config`/`--set` like serve, options as the last word."""

    model: str = "embedded"
    profile: Optional[str] = None  # text file, or JSON with `person` (and `situation`)
    situation: Optional[str] = None  # overrides the profile's
    system_template: Optional[str] = None  # default: the prompt the model was trained with
    show_reasoning: bool = False
    transcript: Optional[str] = None  # JSONL, appended turn by turn
    max_tokens: int = Field(320, ge=1)
    temperature: float = Field(0.7, ge=0.0)
    seed: Optional[int] = None
    guard: bool = True
    guard_model: OptionalModel = None  # the guard's extra model check (none/off: patterns only)
    locale: Optional[str] = None  # crisis-line locale file for the guard's replies
    cache: bool = True
    llm_options: LLMOptions = Field(default_factory=LLMOptions)  # timeout, retries of a remote model


def run_chat(cfg: ChatConfig, *, stream: TextIO | Iterable[str] | None = None, console=None) -> int:
    """The chat loop; returns the exit code (1 when a model call failed, else 0)."""
    from rich.console import Console
    from rich.markup import escape


    console = console or Console()
    model = cfg.model
    try:
        spec = parse_model_string(model)
        person, profile_situation = read_profile(cfg.profile) if cfg.profile else ("", None)
        # a Kardia-trained model gets exactly the prompt it was trained with, unless a template is named
        prompt = PromptProfile.named(cfg.system_template) if cfg.system_template else PromptProfile.for_model(model)
        system = prompt.render(person, cfg.situation if cfg.situation is not None else (profile_situation or ""))
        params = SamplingParams(max_tokens=cfg.max_tokens, temperature=cfg.temperature, seed=cfg.seed)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}")
        return 2
    try:
        the_guard, safety, guard_state = load_guard(cfg.guard, cfg.guard_model, cfg.locale)
    except ValueError as exc:  # a bad locale file: named by the safety module
        console.print(f"[red]error:[/] {escape(str(exc))}")
        return 2
    llm = load_llm(model, cache=cfg.cache, **cfg.llm_options.for_model(model))
    appender = JsonlAppender(cfg.transcript) if cfg.transcript else None
    session = ChatSession(
        llm=llm, system=system, params=params, model_name=spec.display, guard=the_guard, safety=safety, transcript=appender
    )
    session.start(guard_state)
    stream = stream if stream is not None else sys.stdin
    interactive = hasattr(stream, "isatty") and stream.isatty()
    console.print(f"[dim]kardia chat with {escape(spec.display)} (guard {guard_state}); /quit or Ctrl-D ends[/]")
    try:
        lines = _lines(stream, console) if hasattr(stream, "isatty") else (s.rstrip("\n") for s in stream)
        for line in lines:
            text = line.strip()
            if not text:
                continue
            if text.lower() in QUIT_WORDS:
                break
            if not interactive:
                console.print(f"[bold cyan]you:[/] {escape(text)}")
            if interactive:
                with console.status("thinking..."):
                    result = session.turn(text)
            else:
                result = session.turn(text)
            if result.error:
                console.print(f"[red]model error:[/] {escape(result.error)}")
                continue
            if cfg.show_reasoning:
                console.print(_reasoning_panel(result))
            console.print(f"[bold magenta]kardia:[/] {escape(result.shown)}")
    finally:
        if appender is not None:
            appender.close()
    return 1 if session.errors else 0


def register(app: typer.Typer) -> None:
    @app.command("chat")
    def chat_command(
        model: Optional[str] = typer.Option(None, "--model", "-m", help="Model string: embedded, a folder, or openai:MODEL@URL (default embedded)."),
        profile: Optional[Path] = typer.Option(None, "--profile", help="Profile file: text, or JSON with a 'person' (and optional 'situation') field."),
        situation: Optional[str] = typer.Option(None, "--situation", help="The situation the person is in (overrides the profile's)."),
        system_template: Optional[str] = typer.Option(None, "--system-template", help="System prompt template: a shipped name or a .txt path with {profile} and {situation} (default: the prompt the model was trained with, else `system`)."),
        show_reasoning: bool = typer.Option(False, "--show-reasoning", help="Also print the understanding, reasoning and emotion spans (dimmed)."),
        transcript: Optional[Path] = typer.Option(None, "--transcript", help="Append each turn to this JSONL file as it happens."),
        max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="Most tokens per answer (default 320)."),
        temperature: Optional[float] = typer.Option(None, "--temperature", help="Sampling temperature (0 = greedy; default 0.7)."),
        seed: Optional[int] = typer.Option(None, "--seed", help="Sampling seed (seeded calls are cached)."),
        guard: Optional[bool] = typer.Option(None, "--guard/--no-guard", help="Screen every message with the crisis guard (default on)."),
        guard_model: Optional[str] = typer.Option(None, "--guard-model", help="Model string for the guard's extra check of indirect statements (default: patterns only)."),
        locale: Optional[Path] = typer.Option(None, "--locale", help="Crisis-line locale file for the guard's replies (YAML; see kardia.safety)."),
        cache: Optional[bool] = typer.Option(None, "--cache/--no-cache", help="Use the on-disk response cache for deterministic calls (default on)."),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config (ChatConfig fields)."),
        set_: list[str] = typer.Option([], "--set", help="Override a config key: key=value (repeatable)."),
    ) -> None:
        """Chat with a model in the terminal (the person sees only the response span)."""
        options = {
            "model": model, "profile": profile, "situation": situation, "system_template": system_template,
            "show_reasoning": show_reasoning or None, "transcript": transcript, "max_tokens": max_tokens,
            "temperature": temperature, "seed": seed, "guard": guard, "guard_model": guard_model, "locale": locale,
            "cache": cache,
        }
        try:
            cfg = ChatConfig.from_cli(config, set_, options)
        except ConfigError as exc:
            fail(exc)
        raise typer.Exit(run_chat(cfg))
