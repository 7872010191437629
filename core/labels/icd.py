"""ICD-10-CM look-up: search the code set by code or by words, and validate codes.

The code set is the one shipped with the ``simple-icd-10-cm`` package (see
``CODE_SET_VERSION``). Chapters ("9") and blocks ("I30-I5A") are not codes and are never
offered or accepted; categories ("I42"), subcategories ("I42.0") and 7th-character extensions
("S72.001A") are. ``IcdCode.billable`` is True for leaf codes, the ones a claim may carry.

The search index is built once per process on first use (~0.2 s) and then answers a query in a
few milliseconds: an inverted index from description words to codes, plus a sorted list of
dot-less codes for prefix search.
"""

from __future__ import annotations

import bisect
import difflib
import re
import threading
import warnings
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

__all__ = [
    "CODE_SET_VERSION", "IcdCode", "normalize_icd10", "search_icd10", "suggest_icd10", "validate_icd10",
]


@dataclass(frozen=True)
class IcdCode:
    """One ICD-10-CM code: ``code`` with its dot ("I42.0"), its description, and whether it is a
    leaf (billable) code."""

    code: str
    description: str
    billable: bool = True

    def __str__(self) -> str:
        return f"{self.code} {self.description}"


def _code_set_version() -> str:
    # Read from the package's data file names without importing it: the import parses the
    # whole tabular XML (seconds), which only the first search should pay for.
    spec = find_spec("simple_icd_10_cm")
    try:
        names = [p.name for loc in spec.submodule_search_locations for p in (Path(loc) / "data").iterdir()]
    except (AttributeError, TypeError, OSError):
        return "unknown"
    match = next((re.search(r"code-list-(.+)\.txt$", n) for n in names if n.startswith("code-list-")), None)
    return f"ICD-10-CM {match.group(1).replace('-', ' ')}" if match else "unknown"


CODE_SET_VERSION = _code_set_version()

_CODE_SHAPE = re.compile(r"^[A-Z][0-9][0-9A-Z]([0-9A-Z]{0,4})$")
_WORD = re.compile(r"[a-z0-9]+")
# A query shaped like "I4", "I42" or "i42.0" is (also) searched as a code prefix.
_CODE_TOKEN = re.compile(r"^[A-Za-z][0-9]([0-9A-Za-z](\.?[0-9A-Za-z]{0,4})?)?$")


def _stem(word: str) -> str:
    # Enough stemming that "cardiomyopathy" finds "Other cardiomyopathies" and "fractures"
    # finds "fracture"; applied to both the index and the query, so it only has to be consistent.
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def _words(text: str) -> list[str]:
    return [_stem(w) for w in _WORD.findall(text.lower())]


def normalize_icd10(code: str) -> str:
    """Upper-case ``code`` and drop dots and spaces: ``" i42.0 "`` -> ``"I420"``.

    This is the key the index is built on; it does not check that the code exists.
    """
    return re.sub(r"[\s.]", "", str(code)).upper()


class _Index:
    """Everything the search needs, built in one pass over the code set."""

    def __init__(self) -> None:
        with warnings.catch_warnings():
            # simple-icd-10-cm 1.5 loads its data through deprecated importlib.resources calls.
            warnings.simplefilter("ignore", DeprecationWarning)
            import simple_icd_10_cm as cm

        self.codes: list[IcdCode] = []
        self.by_key: dict[str, int] = {}
        self.word_counts: list[int] = []
        postings: dict[str, set[int]] = {}
        for code in cm.get_all_codes(True):
            if cm.is_chapter_or_block(code):
                continue
            # The package joins alternative titles with "/\t"; one line reads better in a table.
            description = " ".join(cm.get_description(code).split())
            position = len(self.codes)
            self.codes.append(IcdCode(code, description, bool(cm.is_leaf(code))))
            self.by_key[normalize_icd10(code)] = position
            words = _words(description)
            self.word_counts.append(len(words))
            for word in set(words):
                postings.setdefault(word, set()).add(position)
        self.postings = postings
        self.vocabulary = sorted(postings)
        # Positions follow the package's order, which is code order, so sorting keys keeps it.
        self.sorted_keys = sorted(self.by_key)

    def prefix_positions(self, key: str) -> list[int]:
        keys = self.sorted_keys
        out = []
        for i in range(bisect.bisect_left(keys, key), len(keys)):
            if not keys[i].startswith(key):
                break
            out.append(self.by_key[keys[i]])
        return out

    def word_positions(self, word: str) -> tuple[set[int], set[int]]:
        """(positions whose description has ``word`` as a whole word, positions where it is only
        part of a word)."""
        whole = self.postings.get(word, set())
        partial: set[int] = set()
        if len(word) < 3:
            # "a" or "of" inside longer words would match nearly every code.
            return whole, partial
        for entry in self.vocabulary:
            if word in entry and entry != word:
                partial |= self.postings[entry]
        return whole, partial - whole


_index: _Index | None = None
_index_lock = threading.Lock()


def _get_index() -> _Index:
    global _index
    if _index is None:
        with _index_lock:
            if _index is None:
                _index = _Index()
    return _index


def _main_unspecified(described: list[str], words: list[str]) -> bool:
    """Whether a description reads as the "unspecified" code of the typed disease itself: it
    starts with the typed words and says "unspecified" at most one word later ("Pneumonia,
    unspecified organism", "Typhoid fever, unspecified"; not "Pneumonia due to staphylococcus,
    unspecified" nor "Tuberculosis of eye, unspecified")."""
    if described[:len(words)] != words or "unspecified" not in described:
        return False
    return described.index("unspecified") - len(words) <= 1


def search_icd10(query: str, *, limit: int = 20) -> list[IcdCode]:
    """Codes matching ``query``, best first, at most ``limit``.

    ``query`` is a code or code prefix ("I42", "i42.0") or words from the description
    ("hypertrophic cardiomyopathy"; every word must occur, in any order; plurals match). Ranking:
    exact code, then codes under that prefix (in code order), then codes whose description
    holds every word whole, then those where a word is only part of a longer word. Within the
    word ranks: a description that is exactly the typed words ("typhoid fever" -> A01.0), then
    the billable "unspecified" code of the main category for the words, i.e. a description that
    starts with them and says "unspecified" at most one word later ("pneumonia" -> J18.9 "Pneumonia, unspecified
    organism", ahead of A01.03 "Typhoid pneumonia"), then billable codes, then descriptions with
    fewer other words, then code order. An empty query gives ``[]``.

    Raises ``ValueError`` if ``limit < 1``.
    """
    if limit < 1:
        raise ValueError(f"limit={limit} must be >= 1")
    query = str(query).strip()
    if not query:
        return []
    index = _get_index()
    # rank per position; lower is better
    ranks: dict[int, tuple] = {}

    key = normalize_icd10(query)
    if _CODE_TOKEN.match(query.replace(" ", "")):
        for position in index.prefix_positions(key):
            ranks[position] = (0 if index.codes[position].code.replace(".", "") == key else 1, position)

    words = _words(query)
    if words:
        matched: set[int] | None = None
        partial_any: set[int] = set()
        for word in words:
            whole, partial = index.word_positions(word)
            hits = whole | partial
            matched = hits if matched is None else matched & hits
            partial_any |= partial
            if not matched:
                break
        for position in matched or ():
            if position in ranks:
                continue
            code = index.codes[position]
            rank = 3 if position in partial_any else 2
            extra_words = index.word_counts[position] - len(words)
            described = _words(code.description)
            exact = described == words
            main_unspecified = code.billable and _main_unspecified(described, words)
            ranks[position] = (rank, not exact, not main_unspecified, not code.billable, extra_words, position)

    best = sorted(ranks, key=ranks.__getitem__)[:limit]
    return [index.codes[p] for p in best]


def _structural_suggestions(key: str, raw: str) -> list[str]:
    index = _get_index()
    # The longest prefix that still names real codes says where the typo is ("I4299X" -> I42.9).
    for length in range(len(key) - 1, 2, -1):
        positions = index.prefix_positions(key[:length])
        if positions:
            return [index.codes[p].code for p in positions[:5]]
    if re.search(r"[A-Za-z]{3,}", raw):
        # Likely a disease name typed into the code field.
        found = search_icd10(raw, limit=5)
        if found:
            return [c.code for c in found]
    close = difflib.get_close_matches(key, index.sorted_keys, n=5, cutoff=0.75)
    return [index.codes[index.by_key[k]].code for k in close]


def suggest_icd10(code: str, disease: str | None = None, *, limit: int = 5) -> list[IcdCode]:
    """Codes to offer instead of ``code`` (an invalid or doubtful code), best first.

    By meaning first: when ``disease`` (the disease name typed next to the code) is given, the
    best ``search_icd10`` matches for it come first ("X99.999" next to "pneumonia" offers
    J18.9 Pneumonia, unspecified organism), at most ``limit - 2`` of them. Then by spelling: codes under the longest prefix of
    ``code`` that names real codes, or close codes by edit distance. No duplicates; at most
    ``limit``.
    """
    index = _get_index()
    ordered: list[str] = []
    if disease is not None and str(disease).strip():
        # Leave room for a spelling neighbour or two: the typed code may be a near miss.
        ordered += [c.code for c in search_icd10(str(disease), limit=max(1, limit - 2))]
    if code is not None and str(code).strip():
        ordered += _structural_suggestions(normalize_icd10(code), str(code))
    unique = list(dict.fromkeys(ordered))[:limit]
    return [index.codes[index.by_key[normalize_icd10(c)]] for c in unique]


def validate_icd10(code: str, *, disease: str | None = None) -> IcdCode:
    """The ``IcdCode`` for ``code``, normalised: ``"i420"`` and ``"I42.0"`` both give
    ``IcdCode("I42.0", "Dilated cardiomyopathy", True)``.

    Raises ``ValueError`` when ``code`` is empty or not an ICD-10-CM code in this code set
    (chapters and blocks are not codes); the message names the bad value, the expected shape,
    and close existing codes with what they mean (``suggest_icd10``: codes for ``disease``,
    the disease name typed with the code, first; then codes spelled like ``code``).
    """
    if code is None or not str(code).strip():
        raise ValueError(f"ICD-10-CM code {code!r} is empty; give a code such as 'I42.0'")
    key = normalize_icd10(code)
    index = _get_index()
    position = index.by_key.get(key)
    if position is not None:
        return index.codes[position]
    shape = (
        "" if _CODE_SHAPE.match(key)
        else " (codes are a letter, a digit, a digit or letter, then up to 4 more, e.g. 'I42.0')"
    )
    suggestions = suggest_icd10(str(code), disease)
    hint = f"; close codes: {', '.join(f'{c.code} ({c.description})' for c in suggestions)}" if suggestions else ""
    raise ValueError(f"{code!r} is not an ICD-10-CM code in {CODE_SET_VERSION}{shape}{hint}")
