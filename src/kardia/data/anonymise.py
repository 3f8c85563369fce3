"""No personal identifiers leave a build: hashed usernames, scrubbed contact details and addresses.

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

# Street addresses, by pattern: a house number with a street name and type ("221B Baker Street",
# "1600 Pennsylvania Ave NW", "12 rue de la Paix", "Hauptstraße 12", "Via Roma 5"), PO boxes, UK postcodes.
# Street types that are seldom ordinary words: the name before them may be in any case.
_STRONG_TYPES = r"street|avenue|ave|road|rd|boulevard|blvd|lane|ln|highway|hwy|parkway|pkwy"
# Street types that are also ordinary words ("i drive a", "first place", "no way"): name and type Capitalised.
_WEAK_TYPES = (
    r"St|Drive|Dr|Court|Ct|Place|Pl|Square|Sq|Terrace|Way|Crescent|Close|Row|Grove|Gardens|Mews|Circle|Cir|"
    r"Alley|Trail|Walk|Hill|Park|Loop|Plaza"
)
# words that follow a number in ordinary prose ("5 long miles down the road"): never a street name
_NOT_A_NAME = (
    r"(?!(?i:the|a|an|i|you|we|he|she|they|it|my|our|your|his|her|their|its|this|that|these|those|no|not|"
    r"down|up|on|in|at|to|of|and|or|from|across|along|into|over|by|for|with|long|short|few|more|less|"
    r"other|lane|miles?|km|kms|metres?|meters?|minutes?|hours?|days?|weeks?|months?|years?|blocks?|"
    r"times?|people|doors?)\b)"
)
_NUMBER = r"\b\d{1,5}[A-Za-z]?(?:[-/]\d{1,5}[A-Za-z]?)?,?\s+"
_ROMANCE_NAME = r"(?:\s+(?:[A-ZÀ-Ý][\w'’-]*|(?i:de|du|des|la|le|les|del|della|dei|di|da|do|dos|das)\b|(?i:[dl])['’]\w+)){1,5}"
_ADDRESS = re.compile(
    # English order: "221B Baker Street", "1600 Pennsylvania Ave NW", "742 Evergreen Terrace"
    rf"{_NUMBER}(?:{_NOT_A_NAME}(?:[A-Za-z][\w'’.-]*|\d+(?:st|nd|rd|th))\s+){{1,3}}(?i:{_STRONG_TYPES})\b\.?(?:\s+(?:NW|NE|SW|SE|N|S|E|W)\b\.?)?"
    rf"|{_NUMBER}(?:[A-Z][\w'’.-]*\s+|\d+(?:st|nd|rd|th)\s+){{1,3}}(?:{_WEAK_TYPES})\b\.?(?:\s+(?:NW|NE|SW|SE|N|S|E|W)\b\.?)?"
    # French, Spanish, Portuguese, Italian order: number, street type, name ("12 rue de la Paix")
    r"|\b\d{1,5}[A-Za-z]?(?:\s*(?:bis|ter))?,?\s+(?i:rue|avenue|boulevard|bd|chemin|allée|allee|impasse|quai|calle|"
    rf"avenida|rua|viale|piazza|corso)\b{_ROMANCE_NAME}"
    # name, then number: "Via Roma 5", "Hauptstraße 12", "Keizersgracht 123"
    r"|\b(?:Via|Viale|Piazza|Corso|Calle|Avenida|Rua|Carrer)\s+(?:[\w'’-]+\s+){1,3}\d{1,5}[A-Za-z]?\b"
    r"|\b[A-ZÄÖÜ][\w-]*(?:straße|strasse|str\.|weg|gasse|platz|allee|damm|gracht|laan|straat|vej|gatan|gata)\s+\d{1,5}[A-Za-z]?\b"
    r"|\b(?i:P\.?\s?O\.?\s+Box)\s+\d+"
    r"|\b[A-Z]{1,2}\d[A-Z\d]?\s+\d[A-Z]{2}\b",  # UK postcode (NW1 6XE)
)

# Order matters: URLs and e-mails before handles (an e-mail's "@host" is not a handle); addresses before
# phones (a house number range is not a phone number).
_PATTERNS: tuple[tuple[str, re.Pattern], ...] = (
    ("[email]", re.compile(r"[\w.+%-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}")),
    ("[url]", re.compile(r"(?:https?://|ftp://|www\.)[^\s<>\"']*[^\s<>\"'.,;:!?)]|\b[\w-]+(?:\.[\w-]+)*\.(?:com|org|net|io|co|edu|gov|me|info|ly|gg|tv|uk|de)(?:/[^\s<>\"']*)?\b", re.I)),
    ("[address]", _ADDRESS),
    ("[phone]", re.compile(r"(?<![\w])(?:\+?\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?)?\d{2,4}[\s.-]\d{3,4}(?:[\s.-]\d{2,4})?(?![\w])|(?<![\w])\+\d{8,14}(?![\w])")),
    ("[handle]", re.compile(r"(?<![\w@])@[A-Za-z0-9_](?:[A-Za-z0-9_.]{0,30}[A-Za-z0-9_])?")),
)


def scrub(text: str, names: tuple[str, ...] | list[str] = ()) -> str:
    """Replace e-mails, URLs, street addresses, phone numbers and @handles with a placeholder, and each
    of `names` (a profile's own username: its hash is kept, so its plain text must not be) with
    `[username]`."""
    if not text:
        return text
    for name in sorted({n.strip() for n in names if n and n.strip()}, key=len, reverse=True):
        text = re.sub(rf"(?<![\w]){re.escape(name)}(?![\w])", "[username]", text, flags=re.IGNORECASE)
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
