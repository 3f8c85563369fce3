"""DialogueRecord JSONL -> training examples, streamed (memory stays flat as the file grows).

- SFT: one example per dialogue, `{"messages": [...]}`, the whole conversation; the chat template's
  generation markers put the loss on assistant turns only.
- GRPO: one prompt per assistant turn (system + history up to that user turn), with the columns the
  rewards read: `emotion` (gold label), `person` (profile), `situation`, plus `id` (`dialogue:turn`).

The system message is re-rendered from the record's person and situation with the ONE system prompt
(`kardia.prompts.system_prompt`) unless `system_prompt="record"`, so training sees exactly what
eval, chat and serve will send. Assistant turns written with tags are rewritten to the token spelling
the model emits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal

from ..dataset import DialogueRecord
from ..records import iter_jsonl
from ..prompts import PromptProfile
from .. import spans

Difficulty = Literal["easy", "hard", "all"]
SystemPromptMode = Literal["template", "record"]


@dataclass
class DataStats:
    """What a pass over the data saw; printed by --dry-run and written into the model card."""

    path: str = ""
    records: int = 0
    used_records: int = 0
    skipped_difficulty: int = 0
    examples: int = 0
    assistant_turns: int = 0
    turns_rewritten_from_tags: int = 0
    turns_not_four_spans: int = 0
    emotions: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def iter_dialogues(path: str | Path, difficulty: Difficulty = "all", stats: DataStats | None = None) -> Iterator[DialogueRecord]:
    """Stream records, keeping those of the requested difficulty (bad lines raise, naming file/line/field)."""
    stats = stats if stats is not None else DataStats()
    stats.path = str(path)
    for _, rec in iter_jsonl(path, model=DialogueRecord):
        stats.records += 1
        if difficulty != "all" and rec.meta.difficulty != difficulty:
            stats.skipped_difficulty += 1
            continue
        stats.used_records += 1
        stats.emotions[rec.emotion] = stats.emotions.get(rec.emotion, 0) + 1
        yield rec


def _system(rec: DialogueRecord, mode: SystemPromptMode, profile=None) -> str:
    if mode == "record":
        return rec.messages[0].content

    return (profile or PromptProfile.named("system")).render(rec.person, rec.situation)


def _assistant_content(text: str, stats: DataStats) -> str:
    """Token spelling for the model; a turn that is not four clean spans is kept as written and counted."""

    parsed = spans.parse(text)
    if not parsed.ok:
        stats.turns_not_four_spans += 1
        return text
    rendered = spans.render(parsed.understanding, parsed.reasoning, parsed.emotion, parsed.response, style="tokens")
    if rendered != text and "<|" not in text:
        stats.turns_rewritten_from_tags += 1
    return rendered


def conversation(rec: DialogueRecord, system_mode: SystemPromptMode = "template", stats: DataStats | None = None, profile=None) -> list[dict[str, str]]:
    stats = stats if stats is not None else DataStats()
    msgs = [{"role": "system", "content": _system(rec, system_mode, profile)}]
    for m in rec.messages[1:]:
        content = m.content
        if m.role == "assistant":
            stats.assistant_turns += 1
            content = _assistant_content(content, stats)
        msgs.append({"role": m.role, "content": content})
    return msgs


def iter_sft_examples(
    path: str | Path, difficulty: Difficulty = "easy", system_mode: SystemPromptMode = "template", stats: DataStats | None = None,
    profile=None,
) -> Iterator[dict[str, Any]]:
    """One conversational example per dialogue that has at least one assistant turn."""
    stats = stats if stats is not None else DataStats()
    for rec in iter_dialogues(path, difficulty, stats):
        msgs = conversation(rec, system_mode, stats, profile)
        if not any(m["role"] == "assistant" for m in msgs):
            continue
        stats.examples += 1
        yield {"messages": msgs}


def iter_grpo_prompts(
    path: str | Path, difficulty: Difficulty = "hard", system_mode: SystemPromptMode = "template", stats: DataStats | None = None,
    profile=None,
) -> Iterator[dict[str, Any]]:
    """One prompt per assistant turn: system + history up to that user turn, and the reward columns."""
    stats = stats if stats is not None else DataStats()
    for rec in iter_dialogues(path, difficulty, stats):
        msgs = conversation(rec, system_mode, stats, profile)
        turn = 0
        for i, m in enumerate(msgs):
            if m["role"] != "assistant":
                continue
            stats.examples += 1
            yield {
                "id": f"{rec.id}:{turn}",
                "prompt": msgs[:i],
                "emotion": rec.emotion,
                "person": rec.person,
                "situation": rec.situation,
            }
            turn += 1


def count(path: str | Path, kind: Literal["sft", "grpo"], difficulty: Difficulty, system_mode: SystemPromptMode = "template", profile=None) -> DataStats:
    """One streaming pass for the numbers (--dry-run, model card); no torch needed."""
    stats = DataStats()
    it = iter_sft_examples if kind == "sft" else iter_grpo_prompts
    for _ in it(path, difficulty, system_mode, stats, profile):
        pass
    if stats.examples == 0:
        hint = f" ({stats.skipped_difficulty} records skipped: meta.difficulty is not {difficulty!r}; set data.difficulty=all to use them)" if stats.skipped_difficulty else ""
        raise ValueError(f"{path}: no {kind.upper()} examples{hint}")
    return stats


def build_dataset(path: str | Path, kind: Literal["sft", "grpo"], difficulty: Difficulty, system_mode: SystemPromptMode = "template", cache_dir: str | None = None, profile=None):
    """A `datasets.Dataset` written to Arrow from the generator (no whole-file list in memory)."""
    from datasets import Dataset

    p = str(Path(path).resolve())
    mtime = Path(p).stat().st_mtime_ns
    prof = (profile.template_text, profile.profile_words) if profile is not None else None
    return Dataset.from_generator(
        _gen_wrapper,
        gen_kwargs={"kind": kind, "path": p, "difficulty": difficulty, "system_mode": system_mode, "mtime": mtime,
                    "prompt": prof},
        cache_dir=cache_dir,
    )


def _gen_wrapper(kind: str, path: str, difficulty: str, system_mode: str, mtime: int, prompt=None):
    # `mtime` and `prompt` are part of the fingerprint: an edited file or another prompt is never served from a stale cache.

    gen = iter_sft_examples if kind == "sft" else iter_grpo_prompts
    profile = PromptProfile(prompt[0], prompt[1]) if prompt else None
    yield from gen(path, difficulty, system_mode, None, profile)  # type: ignore[arg-type]
