"""The dialogue record: exactly KardiaBench's fields plus `id` and `meta`. Shared by build, train, eval."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: str


class DialogueMeta(BaseModel):
    """What a user needs to trust and reuse a record (free-form extras allowed)."""

    model_config = ConfigDict(extra="allow")
    seed: int | None = None
    models: dict[str, str] = Field(default_factory=dict)  # role -> model string
    verdict_counts: dict[str, int] = Field(default_factory=dict)  # FAIL / PASS / SOLVED
    difficulty: Literal["easy", "hard"] | None = None
    split: Literal["train", "test"] | None = None
    mbti_assigned: bool = False
    source: str | None = None  # where the seed situation came from (ed, esconv, ...)


class DialogueRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    person: str
    mbti: str = ""
    emotion: str
    situation: str
    anon_username: str
    messages: list[ChatMessage]
    meta: DialogueMeta = Field(default_factory=DialogueMeta)

    @field_validator("messages")
    @classmethod
    def _shape(cls, v: list[ChatMessage]) -> list[ChatMessage]:
        if not v or v[0].role != "system":
            raise ValueError("messages must start with the system prompt")
        turns = v[1:]
        for i, m in enumerate(turns):
            want = "user" if i % 2 == 0 else "assistant"
            if m.role != want:
                raise ValueError(f"message {i + 1}: expected role {want}, got {m.role}")
        return v

    def assistant_turns(self) -> list[tuple[list[dict[str, Any]], str]]:
        """(prompt messages up to this user turn, gold assistant content) for each assistant turn."""
        out = []
        msgs = [m.model_dump() for m in self.messages]
        for i, m in enumerate(msgs):
            if m["role"] == "assistant":
                out.append((msgs[:i], m["content"]))
        return out
