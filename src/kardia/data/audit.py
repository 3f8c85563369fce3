"""Audit of a built dataset: what the filters promise, measured again on what was kept.

The filters drop dialogues; this reads the kept ones back and counts, per assistant turn, whether the
emotion span is the gold label, whether every span ends a sentence, whether the understanding copies
the user's turn, and, per user turn, role slips of the user simulator (identity drift). A report that
says "0 role slips" is then a measurement on the output, not a promise about the code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from ..records import iter_jsonl
from ..spans import parse
from .filters import check_identity_drift, copies_turn, ends_sentence


def audit_dialogues(path: str | Path, identity_patterns: str = "build/identity_drift_patterns") -> dict[str, Any]:
    n_dialogues = turns = gold = whole = copies = user_turns = slips = 0
    for _, rec in iter_jsonl(Path(path)):
        n_dialogues += 1
        msgs = rec["messages"]
        slips += len(check_identity_drift(rec, identity_patterns))
        for i, m in enumerate(msgs):
            if m["role"] == "user":
                user_turns += 1
            if m["role"] != "assistant" or i == 0 or msgs[i - 1]["role"] != "user":
                continue
            p = parse(m["content"])
            turns += 1
            gold += int(p.emotion == rec.get("emotion"))
            whole += int(all(ends_sentence(s or "") for s in (p.understanding, p.reasoning, p.response)))
            copies += int(copies_turn(p.understanding or "", msgs[i - 1]["content"]))
    share = (lambda k: k / turns if turns else None)  # noqa: E731
    return {"dialogues": n_dialogues, "assistant_turns": turns, "user_turns": user_turns,
            "emotion_is_gold": gold, "emotion_is_gold_share": share(gold),
            "whole_sentences": whole, "whole_sentences_share": share(whole),
            "understanding_copies_user": copies, "understanding_copies_share": share(copies),
            "role_slips": slips}
