"""Keeping judged text in its place: data, never instructions.

The profile, history and response are shown to a judge as a quoted block between delimiters whose
tag is derived from a hash of the block's own content (so the data cannot know, and so cannot close,
its own delimiter; and the prompt stays deterministic, so judge calls are cacheable). Every data line
is prefixed with `| `. Span tokens, chat-template tokens and role markers inside the data are
neutralised, so nothing in the data can look like the start of a new system or user turn. Every
line-break class (\r, VT, FF, NEL, U+2028, ...) becomes \n before quoting, so no reader sees a data line
without its prefix.
"""

from __future__ import annotations

import hashlib
import re
from typing import Iterable

from ..spans import strip_span_markup

QUOTE = "| "

# chat-template / special tokens of common families: <|im_start|>, <|eot_id|>, <s>, </s>, [INST], <<SYS>>
# (and DeepSeek's full-width bars: <｜end▁of▁sentence｜>)
_SPECIAL = re.compile(r"<[|｜]\s*([^|｜<>\n]{0,64}?)\s*[|｜]>")
_INST = re.compile(r"\[\s*/?\s*(INST|SYS|SYSTEM|USER|ASSISTANT)\s*\]", re.IGNORECASE)
_SYS = re.compile(r"<<\s*/?\s*SYS\s*>>", re.IGNORECASE)
_ROLE_TAG = re.compile(
    r"<\s*/?\s*(s|system|user|assistant|human|ai|bot|instruction|instructions|data[\w-]*|rubric|judge|"
    r"start_of_turn|end_of_turn|bos|eos|pad)\s*/?\s*>",
    re.IGNORECASE,
)
# a line that starts like a transcript role marker: "System:", "### Assistant:", "USER >"
_ROLE_LINE = re.compile(
    r"^(\s*(?:#{1,6}\s*)?)(system|user|assistant|human|ai|judge|evaluator|developer|instruction[s]?)(\s*[:>])",
    re.IGNORECASE | re.MULTILINE,
)


# every character that some reader (str.splitlines, a tokenizer, a terminal, a browser) treats as the
# end of a line: \r, VT, FF, FS/GS/RS, NEL, LINE SEPARATOR, PARAGRAPH SEPARATOR. Left in, the text after
# one would read as a new line without the quote prefix.
_BREAKS = re.compile("\r\n|[\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
# bidi embeddings, overrides and isolates: they can draw a quoted line right-to-left, so that its `| `
# prefix shows at the far end and the line reads as unquoted
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]")


# the remaining C0/C1 control characters (tab and \n kept) and lone surrogates (JSON allows "\ud800";
# they cannot be encoded, so the block could not be hashed into its tag)
_CONTROL = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x9f]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _plain_lines(text: str) -> str:
    """Text whose only line break is \n, so that `quote` prefixes every line a reader will see."""
    text = _BREAKS.sub("\n", text)
    text = _BIDI.sub("", text)
    text = _CONTROL.sub(" ", text)
    return _SURROGATE.sub("\ufffd", text)


def neutralise(text: object) -> str:
    """Text with span tokens removed and role markers / special tokens defanged (content kept readable)."""
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    text = _plain_lines(strip_span_markup(text))
    previous = None
    while previous != text:  # nested tricks like <|<|im_start|>im_start|>
        previous = text
        text = _SPECIAL.sub(lambda m: f"[{m.group(1).strip()}]", text)
        text = _INST.sub(lambda m: f"({m.group(1)})", text)
        text = _SYS.sub("(SYS)", text)
        text = _ROLE_TAG.sub(lambda m: f"({m.group(1)})", text)
    text = _ROLE_LINE.sub(lambda m: f"{m.group(1)}({m.group(2)}){m.group(3)}", text)
    return text


def quote(text: object) -> str:
    """Each line prefixed with `| ` (an empty value says so, rather than vanishing)."""
    t = neutralise(text).strip()
    if not t:
        return QUOTE + "(empty)"
    return "\n".join(QUOTE + line for line in t.split("\n"))


def data_tag(body: str) -> str:
    return "DATA-" + hashlib.sha256(body.encode("utf-8")).hexdigest()[:12].upper()


def data_block(sections: Iterable[tuple[str, object]]) -> tuple[str, str]:
    """(block, tag): labelled, quoted sections between `<TAG>` and `</TAG>`."""
    parts = []
    for label, value in sections:
        parts.append(f"[{label}]\n{quote(value)}")
    body = "\n".join(parts)
    tag = data_tag(body)
    return f"<{tag}>\n{body}\n</{tag}>", tag


def history_text(history: Iterable[dict] | None, user_label: str = "seeker", assistant_label: str = "supporter") -> str:
    """A conversation as `seeker: ...` / `supporter: ...` lines (system messages are left out)."""
    lines = []
    for m in history or []:
        role = str(m.get("role", "")).lower()
        if role == "system":
            continue
        label = assistant_label if role == "assistant" else user_label
        content = neutralise(m.get("content", "")).strip().replace("\n", " ")
        lines.append(f"{label}: {content}")
    return "\n".join(lines) if lines else "(no earlier messages)"
