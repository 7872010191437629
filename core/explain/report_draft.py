"""A report draft from the most similar cases: the honest offline stand-in for a generated report.

For a selected scan, ``draft_report`` takes its nearest neighbours in embedding space that have
a report or notes (never the scan's own patient: their notes would just be copied), splits
every note into sentences, and keeps the sentences the neighbours share most: a sentence's
*support* is how strongly the other neighbours say the same thing, the similarity-weighted mean
over the other neighbours of their closest sentence's cosine similarity to it (TF-IDF by
default; MiniLM sentence vectors when an ``embed_sentences`` callable is given). The draft is
the best-supported sentences, near-duplicates of one already chosen left out, in order of
support, under the heading ``DRAFT_MARK``. It is a draft from similar cases, not a diagnosis.

Notes are free text that often names people, places and dates, so every sentence shown or
drafted is passed through ``scrub_text`` first: dates, years, ages, e-mails, phone numbers,
web links, titled names ("Dr. Smith") and hospital names become placeholders. Paths, file
names and other identifying columns are never part of the result.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from core.notes import DRAFT_MARK, scrub_text, split_sentences

__all__ = [
    "DRAFT_MARK",
    "NEIGHBOUR_COLUMNS",
    "SentenceSpace",
    "ReportDraft",
    "FINDING_TERMS",
    "assemble_draft",
    "draft_report",
    "evaluate_drafts",
    "format_draft",
    "names_finding",
    "note_sentences",
    "notes_by_row",
    "scrub_text",
    "split_sentences",
]

NEIGHBOUR_COLUMNS = ["rank", "patient_id", "distance", "label", "note"]
SENTENCE_COLUMNS = ["sentence", "support", "shared_by", "from_rank"]
MIN_WORDS = 4
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9-]+")


@dataclass
class ReportDraft:
    """What ``draft_report`` found for one scan.

    neighbours : DataFrame ``NEIGHBOUR_COLUMNS``: the similar cases used, nearest first, with
        their (scrubbed) notes; sentences : DataFrame ``SENTENCE_COLUMNS``: every candidate
        sentence with its support (0-1), how many other neighbours share it and which neighbour
        it came from, best first; chosen : the draft's sentences; text : the draft as shown,
        starting with ``DRAFT_MARK``; body : the sentences alone (what the benchmark scores).
    """

    neighbours: pd.DataFrame
    sentences: pd.DataFrame
    chosen: list[str]
    text: str
    notes: list[str] = field(default_factory=list)

    @property
    def body(self) -> str:
        return " ".join(self.chosen)


SUPPORTS = ("terms", "note", "sentence")


@lru_cache(maxsize=65_536)
def note_sentences(note: str) -> tuple[str, ...]:
    """A note's candidate sentences: split, scrubbed, at least ``MIN_WORDS`` words, each once."""
    seen: dict[str, str] = {}
    for sentence in split_sentences(note):
        sentence = scrub_text(sentence)
        if len(_WORD.findall(sentence)) >= MIN_WORDS:
            seen.setdefault(sentence.lower(), sentence)
    return tuple(seen.values())


class SentenceSpace:
    """Sentence vectors for a corpus of notes, computed once and looked up per draft.

    notes : every note drafts may draw from; embed : texts -> ndarray of shape (n, dim) (e.g.
    MiniLM's ``embed_texts``), default TF-IDF fitted on the corpus's sentences (words and word
    pairs, English stop words left out), so that word rarity is judged over the whole corpus.
    Calling it with sentences returns their unit vectors, ndarray of shape (n, dim); a sentence
    not in the corpus is embedded on the fly.
    """

    def __init__(self, notes: Sequence[Any], embed: Callable[[list[str]], np.ndarray] | None = None) -> None:
        sentences = list(dict.fromkeys(s for note in notes if isinstance(note, str) for s in note_sentences(note)))
        self.embed = embed
        self.vectorizer = None
        if embed is None:
            from sklearn.feature_extraction.text import TfidfVectorizer

            self.vectorizer = TfidfVectorizer(stop_words="english", ngram_range=(1, 2), sublinear_tf=True,
                                              token_pattern=r"(?u)\b[A-Za-z][A-Za-z0-9]+\b")
            try:
                self.vectorizer.fit(sentences or ["empty"])
            except ValueError:  # only stop words in the corpus
                self.vectorizer = None
        self.index = {s: i for i, s in enumerate(sentences)}
        self.vectors = self._embed(sentences) if sentences else np.zeros((0, 1))

    def _embed(self, sentences: list[str]) -> Any:
        if self.embed is not None:
            return _unit_rows(np.asarray(self.embed(sentences), dtype=float))
        if self.vectorizer is None:
            return np.zeros((len(sentences), 1))
        return self.vectorizer.transform(sentences)  # sparse, rows already L2-normalised

    def __call__(self, sentences: list[str]) -> Any:
        known = [self.index.get(s) for s in sentences]
        if all(k is not None for k in known):
            return self.vectors[known]
        return self._embed(sentences)


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.nan_to_num(vectors / np.where(norms > 0, norms, 1.0))


def assemble_draft(
    notes: Sequence[Any],
    *,
    weights: Sequence[float] | None = None,
    max_sentences: int = 4,
    min_support: float = 0.03,
    relative: float = 0.5,
    redundancy: float = 0.5,
    support: str = "terms",
    embed_sentences: Callable[[list[str]], np.ndarray] | None = None,
) -> tuple[list[str], pd.DataFrame]:
    """The sentences that several notes share, best first.

    Parameters
    ----------
    notes : the neighbours' notes, nearest first (missing ones are skipped).
    weights : one weight per note (e.g. 1 - cosine distance); default all 1.
    max_sentences : at most this many sentences in the draft.
    min_support : a sentence the other notes support less than this is not drafted.
    relative : nor one supported less than this share of the best sentence's support.
    redundancy : a sentence whose similarity to one already chosen exceeds this is skipped.
    support : "terms" (default): the words most of the notes use, by document frequency and
        corpus rarity, SumBasic-style (``_draft_by_terms``); "note": a sentence's support from another note is its cosine similarity to that
        whole note (the sum of its sentence vectors), so a sentence naming what the others say
        in their own words scores; "sentence": the similarity of that note's closest sentence
        (stricter: the others must say nearly the same sentence).
    embed_sentences : texts -> ndarray of shape (n, dim) (a ``SentenceSpace``, MiniLM...);
        default TF-IDF fitted on these notes' sentences.

    Returns ``(chosen sentences, candidates)`` with ``candidates`` a DataFrame
    ``SENTENCE_COLUMNS`` (``from_rank`` is the 1-based position of the note in ``notes``,
    ``shared_by`` how many other notes hold a sentence with cosine similarity >= 0.5 to it).
    Raises ``ValueError`` for a bad parameter or weights of the wrong length.
    """
    if isinstance(max_sentences, bool) or not isinstance(max_sentences, int) or max_sentences < 1:
        raise ValueError(f"max_sentences={max_sentences!r} must be an integer >= 1")
    if not 0 <= min_support <= 1 or not 0 < redundancy <= 1 or not 0 <= relative <= 1:
        raise ValueError(f"min_support={min_support} and relative={relative} must be in [0, 1], "
                         f"redundancy={redundancy} in (0, 1]")
    if support not in SUPPORTS:
        raise ValueError(f"support={support!r} must be one of {list(SUPPORTS)}")
    weights = np.ones(len(notes)) if weights is None else np.clip(np.asarray(weights, dtype=float), 0, None)
    if len(weights) != len(notes):
        raise ValueError(f"weights has {len(weights)} values but there are {len(notes)} notes")
    sentences: list[str] = []
    owner: list[int] = []
    for index, note in enumerate(notes):
        found = note_sentences(note) if isinstance(note, str) else ()
        sentences.extend(found)
        owner.extend([index] * len(found))
    if not sentences:
        return [], pd.DataFrame(columns=SENTENCE_COLUMNS)
    embed = embed_sentences or SentenceSpace(notes)
    vectors = embed(sentences)
    # TF-IDF rows stay sparse (tens of thousands of word columns); dense embeddings as they are.
    unit = vectors if hasattr(vectors, "tocsr") else _unit_rows(np.asarray(vectors, dtype=float))
    similarity = np.clip(np.asarray((unit @ unit.T).todense() if hasattr(unit, "tocsr") else unit @ unit.T), 0, 1)
    owner_array = np.asarray(owner)
    sources = np.unique(owner_array)
    # best[i, j]: similarity of sentence i to note sources[j]'s closest sentence
    best = np.stack([similarity[:, owner_array == j].max(axis=1) for j in sources], axis=1)
    if support == "terms":
        return _draft_by_terms(sentences, owner_array, weights, similarity, embed, max_sentences=max_sentences,
                               min_support=min_support, relative=relative, redundancy=redundancy)
    if support == "note":
        # cos(sentence, note) with the note the sum of its unit sentence vectors
        # = sum of the sentence's similarities to the note's sentences / the note vector's norm.
        sums = np.stack([similarity[:, owner_array == j].sum(axis=1) for j in sources], axis=1)
        norms = np.sqrt(np.maximum([similarity[np.ix_(owner_array == j, owner_array == j)].sum() for j in sources], 1e-12))
        evidence = np.clip(sums / norms[None, :], 0, 1)
    else:
        evidence = best
    other = owner_array[:, None] != sources[None, :]
    source_weights = weights[sources][None, :] * other
    totals = source_weights.sum(axis=1)
    scores = np.where(totals > 0, (evidence * source_weights).sum(axis=1) / np.where(totals > 0, totals, 1), 0.0)
    shared_by = ((best >= 0.5) & other).sum(axis=1)
    order = np.lexsort((owner_array, -scores))
    candidates = pd.DataFrame({"sentence": [sentences[i] for i in order], "support": scores[order].round(4),
                               "shared_by": shared_by[order], "from_rank": owner_array[order] + 1},
                              columns=SENTENCE_COLUMNS)
    chosen: list[int] = []
    floor = max(min_support, relative * float(scores.max()))
    for i in order:
        if len(chosen) >= max_sentences or scores[i] < floor:
            break
        if any(similarity[i, c] > redundancy for c in chosen):
            continue
        chosen.append(int(i))
    return [sentences[i] for i in chosen], candidates.reset_index(drop=True)


def _content_words(sentence: str) -> set[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return {w for w in re.findall(r"[a-z][a-z0-9]+", sentence.lower()) if len(w) > 2 and w not in ENGLISH_STOP_WORDS}


def _draft_by_terms(sentences: list[str], owner: np.ndarray, weights: np.ndarray, similarity: np.ndarray,
                    embed: Any, *, max_sentences: int, min_support: float, relative: float,
                    redundancy: float) -> tuple[list[str], pd.DataFrame]:
    """SumBasic-style (Nenkova & Vanderwende 2005), by document frequency: a word's weight is
    the (similarity-weighted) share of the notes that use it, times its rarity in the corpus;
    words in only one note count for nothing. A sentence scores the mean weight of its words;
    after a sentence is chosen its words' shares are squared, so the next one adds news."""
    words = [_content_words(s) for s in sentences]
    sources = np.unique(owner)
    total = float(weights[sources].sum()) or 1.0
    share: dict[str, float] = {}
    count: dict[str, int] = {}
    for j in sources:
        for word in set().union(*(words[i] for i in np.flatnonzero(owner == j))):
            share[word] = share.get(word, 0.0) + float(weights[j]) / total
            count[word] = count.get(word, 0) + 1
    vectorizer = getattr(embed, "vectorizer", None)
    vocabulary = getattr(vectorizer, "vocabulary_", {})
    idf = getattr(vectorizer, "idf_", None)
    rarity = {w: float(idf[vocabulary[w]]) if idf is not None and w in vocabulary else 1.0 for w in share}
    shared = {w: share[w] if count[w] >= 2 else 0.0 for w in share}

    def score(i: int) -> float:
        return float(np.mean([shared[w] * rarity[w] for w in words[i]])) if words[i] else 0.0

    scores = np.array([score(i) for i in range(len(sentences))])
    top = float(scores.max()) if len(scores) else 0.0
    scale = top or 1.0
    shared_by = np.array([max((count[w] - 1 for w in words[i] if shared[w] > 0), default=0) for i in range(len(sentences))])
    order = np.lexsort((owner, -scores))
    candidates = pd.DataFrame({"sentence": [sentences[i] for i in order], "support": (scores[order] / scale).round(4),
                               "shared_by": shared_by[order], "from_rank": owner[order] + 1}, columns=SENTENCE_COLUMNS)
    chosen: list[int] = []
    floor = max(min_support * scale, relative * top)
    while len(chosen) < max_sentences:
        current = np.array([score(i) if i not in chosen else -1.0 for i in range(len(sentences))])
        best = int(current.argmax())
        if current[best] < floor or current[best] <= 0:
            break
        if any(similarity[best, c] > redundancy for c in chosen):
            words[best] = set()  # a near-duplicate of a chosen sentence: never again
            continue
        chosen.append(best)
        for word in words[best]:
            shared[word] = shared[word] ** 2
    return [sentences[i] for i in chosen], candidates.reset_index(drop=True)


def draft_report(
    table: pd.DataFrame,
    vectors: np.ndarray,
    row: int,
    *,
    k: int = 8,
    text_column: str = "text",
    label_column: str = "label",
    max_sentences: int = 4,
    support: str = "terms",
    embed_sentences: Callable[[list[str]], np.ndarray] | None = None,
    index: Any = None,
    exclude_same: str | None = None,
) -> ReportDraft:
    """A draft report for row ``row`` of ``table`` from its ``k`` most similar cases.

    Parameters
    ----------
    table : rows (images or patients) with ``patient_id`` and ``text_column``; vectors :
        ndarray of shape (n_rows, dim) aligned with it (NaN rows have no vector).
    row : the selected row (0..n_rows-1); k : how many similar cases with notes to use.
    support, embed_sentences : see ``assemble_draft``; pass a ``SentenceSpace`` of the whole
        table's notes to judge word rarity over the corpus and embed each sentence once.
    index : an already fitted ``SimilarCases`` over ``vectors`` (cosine), to reuse.
    exclude_same : a column (e.g. the source publication); neighbours sharing the row's
        non-missing value are skipped too.

    Returns a ``ReportDraft``. Neighbours of the same patient and neighbours without notes are
    skipped; when fewer than ``k`` remain, fewer are used (and ``notes`` says so). Raises
    ``ValueError`` for a missing column, a row out of range or without a vector, k < 1.
    """
    from core.explain.similar import SimilarCases

    for column in ("patient_id", text_column):
        if column not in table.columns:
            raise ValueError(f"table needs a {column!r} column; it has {list(table.columns)}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k={k!r} must be an integer >= 1")
    search = index if index is not None else SimilarCases(metric="cosine").fit(vectors)
    patients = table["patient_id"].astype(str).to_numpy()
    texts = table[text_column].to_numpy(dtype=object)
    has_note = np.array([isinstance(t, str) and bool(note_sentences(t)) for t in texts])
    allowed = has_note & (patients != patients[row]) if 0 <= row < len(table) else np.zeros(len(table), dtype=bool)
    if exclude_same is not None and 0 <= row < len(table):
        groups = table[exclude_same].to_numpy(dtype=object)
        if not pd.isna(groups[row]):
            allowed &= groups != groups[row]
    eligible = int((allowed & search.valid_).sum())
    available = int(search.rows_.size) - 1
    neighbours = search.query(int(row), k=max(1, available)) if available >= 1 else pd.DataFrame(columns=["row", "distance"])
    keep = [r for r in neighbours.itertuples() if allowed[r.row]][:k]
    notes: list[str] = []
    if eligible == 0:
        notes.append("no other patient with notes has a vector; nothing to draft from")
    elif len(keep) < k:
        notes.append(f"only {len(keep)} other patients with notes; the draft uses them all")
    labels = table[label_column].to_numpy(dtype=object) if label_column in table.columns else [None] * len(table)
    used = pd.DataFrame({
        "rank": np.arange(1, len(keep) + 1),
        "patient_id": [patients[r.row] for r in keep],
        "distance": [round(float(r.distance), 4) for r in keep],
        "label": [labels[r.row] for r in keep],
        "note": [scrub_text(texts[r.row]) for r in keep],
    }, columns=NEIGHBOUR_COLUMNS)
    weights = [max(0.0, 1.0 - float(r.distance)) for r in keep]
    chosen, candidates = assemble_draft([texts[r.row] for r in keep], weights=weights, max_sentences=max_sentences,
                                        support=support, embed_sentences=embed_sentences)
    return ReportDraft(neighbours=used, sentences=candidates, chosen=chosen,
                       text=format_draft(chosen, used), notes=notes)


def format_draft(chosen: Sequence[str], neighbours: pd.DataFrame) -> str:
    """The draft as shown and exported: ``DRAFT_MARK``, the sentences, and what it was made from."""
    labels = neighbours["label"].dropna().astype(str).value_counts() if len(neighbours) else pd.Series(dtype=int)
    made_from = (f"Assembled from the notes of {len(neighbours)} similar cases"
                 + (f" (their labels: {', '.join(f'{name} {count}' for name, count in labels.items())})" if len(labels) else "")
                 + ".")
    body = " ".join(chosen) if chosen else "(The similar cases share no sentence; nothing to draft.)"
    return f"{DRAFT_MARK}.\n{body}\n{made_from}"


# Words that name each finding of the covid-chestxray collection (and common chest findings):
# how the benchmark tells whether a draft names a scan's own finding. A finding with several
# parts ("COVID-19, ARDS") is named only when every part is.
FINDING_TERMS: dict[str, str] = {
    "COVID-19": r"covid|sars-?cov-?2|2019-?ncov|\bncov\b|coronavirus",
    "SARS": r"\bsars\b(?!-?cov-?2)|severe acute respiratory syndrome",
    "ARDS": r"\bards\b|acute respiratory distress",
    "Pneumocystis": r"pneumocystis|\bpcp\b|\bpjp\b|jirovec",
    "Streptococcus": r"streptococc|pneumococc|s\. ?pneumoniae",
    "Klebsiella": r"klebsiella",
    "Legionella": r"legionell",
    "Mycoplasma Bacterial Pneumonia": r"mycoplasma",
    "Lipoid": r"lipoid",
    "Varicella": r"varicella|chickenpox|chicken pox|\bvzv\b",
    "E.Coli": r"\be\. ?coli\b|escherichia",
    "Chlamydophila": r"chlamydo",
    "Influenza": r"influenza|\bflu\b|h1n1",
    "Bacterial": r"bacteri",
    "Pneumonia": r"pneumonia",
    "No Finding": r"no finding|\bnormal\b|unremarkable|no (?:acute|active|significant) (?:disease|abnormalit)|"
                  r"lungs (?:are )?clear|clear lungs",
}


def names_finding(text: str, finding: Any, terms: dict[str, str] | None = None) -> bool | None:
    """Whether ``text`` names ``finding`` (every comma-separated part of it, by ``terms``, default
    ``FINDING_TERMS``); None when a part has no entry in ``terms`` (cannot be judged)."""
    terms = FINDING_TERMS if terms is None else terms
    if not isinstance(finding, str) or not finding.strip():
        return None
    parts = [p.strip() for p in finding.split(",") if p.strip()]
    if any(p not in terms for p in parts):
        return None
    return all(re.search(terms[p], text or "", flags=re.I) is not None for p in parts)


def evaluate_drafts(
    table: pd.DataFrame,
    vectors: np.ndarray,
    *,
    k: int = 8,
    repeats: int = 3,
    seed: int = 0,
    text_column: str = "text",
    label_column: str = "label",
    max_sentences: int = 4,
    support: str = "terms",
    embed_sentences: Callable[[list[str]], np.ndarray] | None = None,
    terms: dict[str, str] | None = None,
    rows: Sequence[int] | None = None,
    exclude_same: str | None = None,
) -> pd.DataFrame:
    """Leave-one-patient-out: how often the draft for each scan names the scan's own finding,
    against drafts assembled the same way from ``k`` random other patients' notes.

    Every row with a vector and a finding ``terms`` knows is scored; its own patient's notes are
    never used. Returns one row per scored row: ``row, patient_id, finding, draft_names``
    (the draft's sentences name the finding), ``random_names`` (share of ``repeats`` random
    drafts that do), ``neighbours_name`` (any of the k similar cases' notes names it: the most a
    draft could do), ``majority_label`` (the commonest label among the similar cases).
    """
    from core.explain.similar import SimilarCases

    matrix = np.asarray(vectors, dtype=np.float64)
    index = SimilarCases(metric="cosine").fit(matrix)
    patients = table["patient_id"].astype(str).to_numpy()
    texts = table[text_column].to_numpy(dtype=object)
    findings = table[label_column].to_numpy(dtype=object)
    has_note = np.array([isinstance(t, str) and bool(note_sentences(t)) for t in texts])
    rng = np.random.default_rng(seed)
    space = SentenceSpace(texts, embed=embed_sentences)
    scored = np.flatnonzero(index.valid_)
    if rows is not None:
        scored = np.intersect1d(scored, np.asarray(rows, dtype=int))
    results = []
    for row in scored:
        if names_finding("", findings[row], terms) is None:
            continue
        draft = draft_report(table, matrix, int(row), k=k, text_column=text_column, label_column=label_column,
                             max_sentences=max_sentences, support=support, embed_sentences=space, index=index,
                             exclude_same=exclude_same)
        if draft.neighbours.empty:
            continue
        allowed = has_note & (patients != patients[row])
        if exclude_same is not None and not pd.isna(table[exclude_same].iloc[row]):
            allowed &= table[exclude_same].to_numpy(dtype=object) != table[exclude_same].iloc[row]
        pool = np.flatnonzero(allowed)
        random_hits = []
        for _ in range(repeats):
            picked = rng.choice(pool, size=min(k, len(pool)), replace=False)
            chosen, _ = assemble_draft([texts[i] for i in picked], max_sentences=max_sentences, support=support,
                                       embed_sentences=space)
            random_hits.append(bool(names_finding(" ".join(chosen), findings[row], terms)))
        labels = draft.neighbours["label"].dropna().astype(str)
        results.append({
            "row": int(row), "patient_id": patients[row], "finding": findings[row],
            "draft_names": bool(names_finding(draft.body, findings[row], terms)),
            "random_names": float(np.mean(random_hits)),
            "neighbours_name": bool(names_finding(" ".join(draft.neighbours["note"]), findings[row], terms)),
            "majority_label": labels.mode().iloc[0] if len(labels) else None,
        })
    return pd.DataFrame(results, columns=["row", "patient_id", "finding", "draft_names", "random_names",
                                       "neighbours_name", "majority_label"])


def notes_by_row(images: pd.DataFrame, table: pd.DataFrame, level: str, text_column: str = "text") -> pd.Series:
    """The note of each row of ``table`` (a cohort's rows): the image's own at image level; at
    patient level the patient's distinct image notes joined, in image order. Rows without a
    note get None. Returns a Series aligned with ``table`` (same index)."""
    if text_column not in images.columns:
        return pd.Series([None] * len(table), index=table.index, dtype=object)
    if level == "image":
        values = images[text_column].to_numpy(dtype=object)[: len(table)]
        return pd.Series([v if isinstance(v, str) else None for v in values], index=table.index, dtype=object)
    notes = images[["patient_id", text_column]].dropna()
    # A boolean array, not a Series: an empty object Series would select columns (none of them).
    notes = notes[notes[text_column].map(lambda t: isinstance(t, str) and bool(t.strip())).to_numpy(dtype=bool)]
    joined = notes.groupby(notes["patient_id"].astype(str), sort=False)[text_column].agg(
        lambda texts: " ".join(dict.fromkeys(t.strip() for t in texts)))
    found = joined.to_dict()
    return pd.Series([found.get(p) for p in table["patient_id"].astype(str)], index=table.index, dtype=object)
