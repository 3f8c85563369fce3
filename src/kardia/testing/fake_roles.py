"""FAKE scripted roles for tests and benchmarks (no model: named as such).

`scripted_responder` answers the FAKE OpenAI-compatible server's requests as the user simulator, the
guided or single-call responder, or the critic, by recognising the shipped prompt templates. Its
answers are deterministic functions of the request (a hash picks verdicts and labels), so two runs
of the same build give the same dataset: what the kill-and-resume test compares.
"""

from __future__ import annotations

import hashlib
import json

_LABELS = ("sad", "anxious", "lonely", "hopeful", "grateful", "disappointed", "afraid", "content")


def _h(text: str) -> int:
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16)


def scripted_responder(fail_rate: float = 0.3, solved_rate: float = 0.15, echo_profile: bool = True):
    """A responder(messages, body) -> str for `FakeOpenAIServer` playing U, A and R.

    echo_profile: the user simulator quotes the first profile line it was shown, so anything left in a
    profile (e.g. an e-mail that should have been scrubbed) reaches the dialogue, as a real model might.
    """

    def respond(messages: list, body: dict) -> str:
        text = "\n".join(str(m.get("content", "")) for m in messages)
        last = str(messages[-1].get("content", "")) if messages else ""
        h = _h(text)
        if "quality critic" in text or '"verdict"' in last:
            u = (h % 1000) / 1000
            verdict = "FAIL" if u < fail_rate else ("SOLVED" if u > 1 - solved_rate else "PASS")
            reasons = {k: f"scripted reason {h % 97}" for k in ("understanding", "reasoning", "emotion", "response", "persona", "safety")}
            return json.dumps({"reasons": reasons, "verdict": verdict})
        if "You are role-playing a real person" in last:
            quote = ""
            if echo_profile and "profile:" in last:
                after = last.split("profile:", 1)[1].strip().splitlines()
                quote = (" As my profile says: " + after[0][:160]) if after else ""
            return f"I keep thinking about it and it weighs on me (note {h % 1000}).{quote}"
        if "describe what the person means" in last:
            return f"They feel shaken and want to be heard (u{h % 100})."
        if "explain why the person feels" in last:
            return f"The event touched something they care about; listening and validation fit (r{h % 100})."
        if "Answer with one label" in last:
            return _LABELS[h % len(_LABELS)]
        if "Write your reply to the person" in last:
            return f"That sounds really hard. I'm here with you; what feels heaviest right now? ({h % 100})"
        if "Write every answer as four parts" in text:
            lab = _LABELS[h % len(_LABELS)]
            return (
                f"<|understanding_begin|>They feel shaken (u{h % 100}).<|understanding_end|>\n"
                f"<|reasoning_begin|>Validation fits.<|reasoning_end|>\n"
                f"<|emotion_begin|>{lab}<|emotion_end|>\n"
                f"<|response_begin|>That sounds hard; I'm here with you.<|response_end|>"
            )
        return f"scripted fallback answer {h % 1000}"

    return respond
