"""No personal identifiers leave a build: hashed usernames, scrubbed contact details.

Applied twice: to profiles and situations before any model sees them (so prompts, traces and the
cache hold none), and to every text field of every output record (a model may invent one).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from pathlib import Path
from typing import Any

# Order matters: URLs and e-mails before handles (an e-mail's "@host" is not a handle).
_PATTERNS: tuple[tuple[str, re.Pattern], ...] = (
    ("[email]", re.compile(r"[\w.+%-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}")),
    ("[url]", re.compile(r"(?:https?://|ftp://|www\.)[^\s<>\"']*[^\s<>\"'.,;:!?)]|\b[\w-]+(?:\.[\w-]+)*\.(?:com|org|net|io|co|edu|gov|me|info|ly|gg|tv|uk|de)(?:/[^\s<>\"']*)?\b", re.I)),
    ("[phone]", re.compile(r"(?<![\w])(?:\+?\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?)?\d{2,4}[\s.-]\d{3,4}(?:[\s.-]\d{2,4})?(?![\w])|(?<![\w])\+\d{8,14}(?![\w])")),
    ("[handle]", re.compile(r"(?<![\w@])@[A-Za-z0-9_](?:[A-Za-z0-9_.]{0,30}[A-Za-z0-9_])?")),
)


def scrub(text: str) -> str:
    """Replace e-mails, URLs, phone numbers and @handles with a placeholder."""
    if not text:
        return text
    for placeholder, pat in _PATTERNS:
        text = pat.sub(placeholder, text)
    return text


def scrub_all(obj: Any) -> Any:
    """Scrub every string inside nested dicts / lists (ids and labels have none to lose)."""
    if isinstance(obj, str):
        return scrub(obj)
    if isinstance(obj, dict):
        return {k: scrub_all(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [scrub_all(v) for v in obj]
    return obj


def anon_username(username: str, salt: str) -> str:
    """A keyed one-way hash (HMAC-SHA256): without the salt nobody can test a guessed name."""
    return "u_" + hmac.new(salt.encode("utf-8"), username.encode("utf-8"), hashlib.sha256).hexdigest()[:16]


def load_or_make_salt(work_dir: Path, configured: str | None) -> str:
    """The configured salt, else one random salt per output folder, kept (mode 0600) for resumes."""
    if configured:
        return configured
    path = work_dir / "salt"
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    work_dir.mkdir(parents=True, exist_ok=True)
    salt = secrets.token_hex(16)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(salt, encoding="utf-8")
    tmp.chmod(0o600)
    tmp.replace(path)
    return salt


def scrub_record(rec: dict) -> dict:
    """Every text field of a dialogue record (`id` and `meta`, which hold no user text, are left as they are)."""
    return {k: (v if k in ("id", "meta") else scrub_all(v)) for k, v in rec.items()}
