"""Tiny DialogueRecord JSONL files for the training tests (built in the test, no downloads)."""

from __future__ import annotations

import json
from pathlib import Path

EMOTIONS = ("sad", "joyful", "afraid", "proud")


def write_dialogues(path: Path, n: int = 8, turns: int = 2, hard_from: int | None = None, tags_every: int = 2) -> Path:
    """`n` dialogues of `turns` exchanges; records from index `hard_from` on are `hard`, earlier ones `easy`.

    Every `tags_every`-th record writes its assistant turns with tags, to exercise the rewrite to tokens.
    """
    from kardia.prompts import system_prompt
    from kardia.spans import render

    hard_from = n // 2 if hard_from is None else hard_from
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            emo = EMOTIONS[i % len(EMOTIONS)]
            person = f"MBTI: INFP\nAbout: student number {i}, likes hiking\nSignature: keep going"
            situation = f"I felt {emo} when my exam results came back ({i})"
            msgs = [{"role": "system", "content": system_prompt(person, situation)}]
            for t in range(turns):
                msgs.append({"role": "user", "content": f"Turn {t}: {situation}. What should I do?"})
                style = "tags" if tags_every and i % tags_every == 1 else "tokens"
                msgs.append({
                    "role": "assistant",
                    "content": render(f"They feel {emo} about the exam.", "Exams matter to them.", emo, "I hear you, that sounds hard.", style=style),
                })
            rec = {
                "id": f"dlg{i}",
                "person": person,
                "mbti": "INFP",
                "emotion": emo,
                "situation": situation,
                "anon_username": f"user{i:03d}",
                "messages": msgs,
                "meta": {"difficulty": "hard" if i >= hard_from else "easy"},
            }
            fh.write(json.dumps(rec) + "\n")
    return path
