"""Free-text notes and reports: sentence splitting, scrubbing of identifying details, and the
mark every machine-made draft carries. A primitive: ``core.explain.report_draft`` builds drafts
with it and ``core.export`` scrubs drafts with it on the way out."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["DRAFT_MARK", "MAX_NOTE_CHARS", "scrub_text", "split_sentences"]

DRAFT_MARK = "DRAFT FROM SIMILAR CASES, NOT A DIAGNOSIS"
MAX_NOTE_CHARS = 20_000  # a longer note is cut: memory and time stay bounded whatever arrives

_ABBREVIATIONS = {"dr", "mr", "mrs", "ms", "prof", "e.g", "i.e", "vs", "approx", "fig", "no", "st", "dept", "etc",
                  "al", "cf", "resp", "pt", "pts", "hr", "min", "max", "sat", "temp"}
# A sentence ends at . ! ? followed by space(s) and a capital, digit or opening bracket/quote,
# or at a full stop glued to a capitalised word ("in progress.Heart"), or at a line break.
_BOUNDARY = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[A-Z0-9])|(?<=[a-z]{2}\.)(?=[A-Z][a-z])|\n+")
_MONTHS = (r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
           r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)")
_SCRUB: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.-]+\b"), "[email]"),
    (re.compile(r"\b(?:https?://|www\.)\S+", re.I), "[link]"),
    (re.compile(r"(?<!\d)(?:\+?\d[\d\s().-]{8,}\d)(?!\d)"), "[number]"),
    (re.compile(rf"\b{_MONTHS}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+(?:19|20)\d{{2}}\b", re.I), "[date]"),
    (re.compile(rf"\b\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTHS}\.?,?\s+(?:19|20)\d{{2}}\b", re.I), "[date]"),
    (re.compile(rf"\b{_MONTHS}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?\b", re.I), "[date]"),
    (re.compile(r"\b\d{1,4}[/.-]\d{1,2}[/.-]\d{1,4}\b"), "[date]"),
    (re.compile(rf"\b(?:in\s+)?{_MONTHS}\s+(?:of\s+)?(?:19|20)\d{{2}}\b", re.I), "[date]"),
    (re.compile(r"(?<![\d.])(?:19|20)\d{2}(?![\d.])"), "[year]"),
    (re.compile(r"\b\d{1,3}[- ](?:year|yr|month|week|day)s?[- ]old\b", re.I), "[age]"),
    (re.compile(r"\b\d{1,3}\s*(?:years?|yrs?|y)\s*(?:old|/o|o)\b", re.I), "[age]"),
    (re.compile(r"\b(?:aged?)\s+\d{1,3}\b", re.I), "[age]"),
    (re.compile(r"\b\d{1,3}\s*(?:yo|y/o|y\.o\.)", re.I), "[age]"),
    (re.compile(r"\b(?:Dr|Mr|Mrs|Ms|Miss|Prof)\.?\s+[A-Z][\w'-]+(?:\s+[A-Z][\w'-]+)?"), "[name]"),
    (re.compile(r"\b(?:[A-Z][\w'-]+\s+){1,4}(?:Hospital|Clinic|Medical Center|Medical Centre|Infirmary|"
                r"University|Institute)\b"), "[hospital]"),
    (re.compile(r"\b(?:Hospital|Clinic|University|Institute)\s+(?:of\s+)?(?:[A-Z][\w'-]+\s*){1,4}"), "[hospital]"),
]


def scrub_text(text: str) -> str:
    """``text`` with dates, years, ages, e-mails, phone numbers, links, titled names and
    hospital names replaced by ``[date]``, ``[year]``, ``[age]``, ``[email]``, ``[number]``,
    ``[link]``, ``[name]``, ``[hospital]``. A safety net for display, not a guarantee: free text
    can name people in ways no pattern knows, which is why exports drop notes by default."""
    out = str(text)
    for pattern, placeholder in _SCRUB:
        out = pattern.sub(placeholder, out)
    return re.sub(r"[ \t]+", " ", out).strip()


def split_sentences(text: Any) -> list[str]:
    """The sentences of a note, in order: split at ``.``, ``!`` or ``?`` before a capital or a
    digit, at a full stop glued to the next capitalised word, and at line breaks; not after
    abbreviations (``Dr.``, ``e.g.``, ``vs.``) or initials (``S. pneumoniae``). Missing or
    blank text gives ``[]``; text beyond ``MAX_NOTE_CHARS`` is ignored."""
    if not isinstance(text, str) or not text.strip():
        return []
    text = text[:MAX_NOTE_CHARS].replace("\r\n", "\n").replace("\r", "\n")
    pieces: list[str] = []
    carry = ""
    for part in _BOUNDARY.split(text):
        part = (part or "").strip()
        if not part:
            continue
        current = f"{carry} {part}".strip() if carry else part
        last = current.rstrip(".").rsplit(None, 1)[-1].lower().lstrip("([\"'") if current.endswith(".") else ""
        if last in _ABBREVIATIONS or (len(last) == 1 and last.isalpha()):
            carry = current  # "Dr." or "S." does not end a sentence: join the next piece
            continue
        pieces.append(current)
        carry = ""
    if carry:
        pieces.append(carry)
    return [re.sub(r"\s+", " ", p) for p in pieces]


# An absolute POSIX or Windows path of two or more components.
_PATH = re.compile(r"(?<![\w.])(?:[A-Za-z]:)?(?:[\\/][^\s\\/:'\"]+){2,}[\\/]?")


def hide_paths(text: Any) -> Any:
    """Replace every absolute path in ``text`` by its last component:
    "No such file: '/srv/runs/ab/x.npy'" -> "No such file: 'x.npy'". Non-strings unchanged."""
    if not isinstance(text, str):
        return text
    return _PATH.sub(lambda m: re.split(r"[\\/]", m.group(0).rstrip("\\/"))[-1], text)
