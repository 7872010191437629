"""Label leakage through free text: does the report or clinical note say the answer?

Case notes of a public collection often name the diagnosis ("COVID-19 positive on RT-PCR").
A text or fused model then reads the label instead of learning from the image, and its score
means nothing for new patients whose notes are not yet written. :func:`detect_text_leakage`
measures how often a row's text names its own label and how well text alone predicts the
label; :func:`mask_label_words` replaces label words with "[MASKED]" before text is embedded.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import Pipeline

from core.classify.cv import cross_val_proba, grouped_folds
from core.classify.evaluate import as_groups
from core.classify.metrics import weighted_auc
from core.classify.target import clean_labels

MASK_TOKEN = "[MASKED]"
# Spellings of known labels (keys: lower-case words of the label joined by one space). Longer
# spellings are matched first, so "SARS-CoV-2" is masked whole rather than as "SARS" + "-CoV-2".
LABEL_SYNONYMS: dict[str, tuple[str, ...]] = {
    "covid 19": ("covid-19", "covid19", "covid", "sars-cov-2", "2019-ncov", "ncov",
                 "novel coronavirus", "coronavirus", "corona virus", "hcov-19"),
    "sars": ("sars", "sars-cov", "severe acute respiratory syndrome"),
    "mers": ("mers", "mers-cov", "middle east respiratory syndrome"),
    "ards": ("ards", "acute respiratory distress syndrome"),
    "pneumocystis": ("pneumocystis", "pcp", "pjp", "jirovecii", "carinii"),
    "streptococcus": ("streptococcus", "streptococcal", "pneumococcus", "pneumococcal", "s. pneumoniae"),
    "klebsiella": ("klebsiella",),
    "legionella": ("legionella", "legionnaires", "legionellosis"),
    "mycoplasma": ("mycoplasma",),
    "chlamydophila": ("chlamydophila", "chlamydia"),
    "e coli": ("e. coli", "e.coli", "escherichia coli"),
    "influenza": ("influenza", "h1n1", "flu"),
    "varicella": ("varicella", "chickenpox", "chicken pox", "varicella-zoster"),
    "tuberculosis": ("tuberculosis", "mycobacterium tuberculosis"),
    "aspergillosis": ("aspergillosis", "aspergillus"),
    "lipoid": ("lipoid",),
    "pneumonia": ("pneumonia", "pneumonitis"),
    "bacterial": ("bacterial", "bacteria"),
    "viral": ("viral", "virus"),
    "fungal": ("fungal", "fungus"),
    "no finding": ("no finding", "no findings", "no abnormality"),
    "cardiomegaly": ("cardiomegaly", "enlarged cardiac silhouette", "enlarged heart"),
    "edema": ("edema", "oedema"),
    "pleural effusion": ("pleural effusion", "effusion", "effusions"),
    "pneumothorax": ("pneumothorax",),
    "atelectasis": ("atelectasis", "atelectatic"),
    "consolidation": ("consolidation", "consolidations"),
    "lung opacity": ("lung opacity", "opacity", "opacities"),
    "fracture": ("fracture", "fractures"),
}
# Label values that say nothing about a disease; matching them as words would flag ordinary
# prose ("no other findings") as leakage.
GENERIC_LABELS = frozenset({
    "other", "others", "rest", "negative", "positive", "none", "unknown", "normal", "abnormal",
    "yes", "no", "true", "false", "control", "case",
})


def _key(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def label_terms(label: str) -> list[str]:
    """Words and phrases that name ``label`` in free text: the label itself, its parts
    ("COVID-19, ARDS" -> both), known synonyms, and known labels among its words
    ("Mycoplasma Bacterial Pneumonia" -> mycoplasma, bacterial, pneumonia). A label "not X"
    (the negative class of a binary target) gives X's terms. Numeric, one-letter and generic
    labels ("other", "negative", "normal", ...) give none: they would match ordinary prose."""
    label = str(label).strip()
    if label.lower().startswith("not "):
        label = label[4:]
    terms: list[str] = []
    for part in re.split(r"[,;/|+]", label):
        key = _key(part)
        if not key or key in GENERIC_LABELS or (
            key not in LABEL_SYNONYMS and (key.replace(" ", "").isdigit() or len(key) < 2)
        ):
            continue
        terms.append(part.strip())
        terms.extend(LABEL_SYNONYMS.get(key, ()))
        for word in part.split():
            if _key(word) != key:
                terms.extend(LABEL_SYNONYMS.get(_key(word), ()))
    return list(dict.fromkeys(t.lower() for t in terms))


def _term_regex(term: str) -> str:
    """Case-insensitive pattern that tolerates any run of spaces, hyphens, dots, underscores
    or slashes between the term's alphanumeric chunks ("covid-19" ~ "COVID 19" ~ "covid19")."""
    chunks = re.findall(r"[a-z0-9]+", term.lower())
    return r"(?<![a-z0-9])" + r"[\s\-_./]*".join(map(re.escape, chunks)) + r"(?![a-z0-9])"


def terms_pattern(terms: Iterable[str]) -> re.Pattern[str] | None:
    """One compiled case-insensitive pattern matching any of ``terms`` (longest first);
    None when there are no terms."""
    unique = sorted({t for t in terms if re.search(r"[a-z0-9]", t.lower())},
                    key=lambda t: (-len(re.findall(r"[a-z0-9]+", t.lower())), -len(t)))
    if not unique:
        return None
    return re.compile("|".join(_term_regex(t) for t in unique), flags=re.IGNORECASE)


def mask_label_words(
    texts: pd.Series | Iterable[str | None],
    labels_or_terms: str | Iterable[str],
    *,
    token: str = MASK_TOKEN,
) -> pd.Series:
    """Replace every word or phrase that names any of ``labels_or_terms`` with ``token``.

    texts : Series (or list) of n_samples texts; missing texts stay missing.
    labels_or_terms : label names (e.g. the label column itself; each value is expanded with
        :func:`label_terms`) or plain terms. Mask *all* labels' words in every row: masking only
        a row's own label would make the mask itself give the label away. Even so, *whether* a
        note names some diagnosis can correlate with the label; ``token=""`` deletes the words
        instead, and :func:`detect_text_leakage` on the masked text shows what is left.
    Returns a Series aligned with ``texts`` (same index).
    """
    series = texts if isinstance(texts, pd.Series) else pd.Series(list(texts), dtype=object)
    items = [labels_or_terms] if isinstance(labels_or_terms, str) else list(labels_or_terms)
    terms: list[str] = []
    for item in dict.fromkeys(str(i) for i in items if i is not None and not pd.isna(i)):
        terms.extend(label_terms(item) or [item])
    pattern = terms_pattern(terms)
    if pattern is None:
        return series.copy()
    return series.map(lambda t: pattern.sub(token, t) if isinstance(t, str) else t)


@dataclass
class LeakageReport:
    """Result of :func:`detect_text_leakage`.

    terms : DataFrame (label, term, n_rows, share_in_label, share_in_others): how often each
        term of a label occurs in that label's rows and in the other rows (top per label).
    per_label : DataFrame (label, n, n_with_own_terms, own_share, other_share).
    own_label_share : share of rows (whose label has terms) whose text names their own label.
    text_auc : macro one-vs-rest AUC of TF-IDF + logistic regression on the text alone,
        patient-grouped CV; NaN when it could not be computed.
    top_ngrams : DataFrame (label, ngram, weight): the n-grams that most push towards each label.
    flagged : True when text_auc >= auc_flag or own_label_share >= share_flag; ``flags`` says why.
    """

    terms: pd.DataFrame
    per_label: pd.DataFrame
    own_label_share: float
    text_auc: float
    top_ngrams: pd.DataFrame
    flagged: bool
    flags: list[str]
    n_rows: int
    n_excluded: int
    notes: list[str] = field(default_factory=list)


def _text_model(random_state: int) -> Pipeline:
    return Pipeline([
        ("tfidf", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, max_features=20000,
                                  token_pattern=r"(?u)\b\w[\w\-]+\b")),
        # One-vs-rest liblinear: ~50x faster than multinomial lbfgs on sparse TF-IDF, and this
        # is a quick alarm, not the model being evaluated.
        ("model", OneVsRestClassifier(LogisticRegression(
            class_weight="balanced", solver="liblinear", random_state=random_state))),
    ])


def detect_text_leakage(
    texts: pd.Series | Iterable[str | None],
    labels: pd.Series | Iterable[Any],
    *,
    groups: Any = None,
    top: int = 10,
    n_splits: int = 5,
    random_state: int = 0,
    auc_flag: float = 0.95,
    share_flag: float = 0.5,
) -> LeakageReport:
    """How much the text gives away the label.

    texts : n_samples texts (missing -> empty). labels : n_samples labels (rows with a missing
        label are excluded and counted in ``n_excluded``). groups : n_samples patient ids for
        the grouped CV (None: rows independent).
    Labels with fewer than ``n_splits`` rows are merged into "other" for the text-only AUC.
    Raises ValueError when lengths differ or a parameter is out of range.
    """
    text_list = list(texts.tolist() if isinstance(texts, pd.Series) else texts)
    label_series = clean_labels(pd.Series(list(labels.tolist() if isinstance(labels, pd.Series) else labels), dtype=object))
    if len(text_list) != len(label_series):
        raise ValueError(f"texts has {len(text_list)} rows but labels has {len(label_series)}")
    if top < 1:
        raise ValueError(f"top={top} must be >= 1")
    if n_splits < 2:
        raise ValueError(f"n_splits={n_splits} must be >= 2")
    if not 0.5 <= auc_flag <= 1.0:
        raise ValueError(f"auc_flag={auc_flag} must be between 0.5 and 1")
    if not 0.0 < share_flag <= 1.0:
        raise ValueError(f"share_flag={share_flag} must be in (0, 1]")
    group_values, notes = as_groups(groups, len(text_list))
    keep = label_series.notna().to_numpy()
    text = pd.Series([t if isinstance(t, str) else "" for t in text_list], dtype=object)[keep].reset_index(drop=True)
    lab = label_series[keep].reset_index(drop=True)
    group_values = group_values[keep]
    n_blank = int((text.str.strip() == "").sum())
    if n_blank:
        notes.append(f"{n_blank} row(s) with no text (treated as empty)")
    if (~keep).any():
        notes.append(f"{int((~keep).sum())} row(s) without a label excluded")

    term_rows, label_rows = [], []
    hit_own = pd.Series(False, index=text.index)
    has_terms = pd.Series(False, index=text.index)
    for label in lab.value_counts().index:
        terms = [] if label.lower().startswith("not ") else label_terms(label)
        pattern = terms_pattern(terms)
        mine = lab == label
        if pattern is None:
            label_rows.append({"label": label, "n": int(mine.sum()), "n_with_own_terms": 0,
                               "own_share": np.nan, "other_share": np.nan})
            continue
        contains = text.map(lambda t, p=pattern: bool(p.search(t)))
        hit_own |= mine & contains
        has_terms |= mine
        label_rows.append({
            "label": label, "n": int(mine.sum()), "n_with_own_terms": int((mine & contains).sum()),
            "own_share": float(contains[mine].mean()),
            "other_share": float(contains[~mine].mean()) if (~mine).any() else np.nan,
        })
        rows = []
        for term in terms:
            single = terms_pattern([term])
            found = text.map(lambda t, p=single: bool(p.search(t)))
            if found.any():
                rows.append({"label": label, "term": term, "n_rows": int(found.sum()),
                             "share_in_label": float(found[mine].mean()),
                             "share_in_others": float(found[~mine].mean()) if (~mine).any() else np.nan})
        term_rows.extend(sorted(rows, key=lambda r: -r["share_in_label"])[:top])
    per_label = pd.DataFrame(label_rows, columns=["label", "n", "n_with_own_terms", "own_share", "other_share"])
    terms_table = pd.DataFrame(term_rows, columns=["label", "term", "n_rows", "share_in_label", "share_in_others"])
    own_share = float(hit_own[has_terms].mean()) if has_terms.any() else float("nan")

    text_auc, auc_notes = _text_only_auc(text, lab, group_values, n_splits, random_state)
    notes.extend(auc_notes)
    top_ngrams = _top_ngrams(text, lab, top, random_state)

    flags = []
    if np.isfinite(text_auc) and text_auc >= auc_flag:
        flags.append(f"text alone predicts the label with AUC {text_auc:.3f} (>= {auc_flag})")
    if np.isfinite(own_share) and own_share >= share_flag:
        flags.append(f"{own_share:.0%} of rows name their own label in the text (>= {share_flag:.0%})")
    return LeakageReport(
        terms=terms_table, per_label=per_label, own_label_share=own_share, text_auc=text_auc,
        top_ngrams=top_ngrams, flagged=bool(flags), flags=flags, n_rows=int(keep.sum()),
        n_excluded=int((~keep).sum()), notes=notes,
    )


def _text_only_auc(text: pd.Series, labels: pd.Series, groups: np.ndarray, n_splits: int,
                   random_state: int) -> tuple[float, list[str]]:
    counts = labels.value_counts()
    rare = counts[counts < n_splits].index
    notes = []
    if len(rare):
        labels = labels.where(~labels.isin(rare), "other")
        notes.append(f"text AUC: merged {len(rare)} label(s) with < {n_splits} rows into 'other'")
    classes = sorted(labels.unique())
    if len(classes) < 2:
        return float("nan"), [*notes, "text AUC: fewer than 2 labels"]
    y = labels.map({c: i for i, c in enumerate(classes)}).to_numpy(dtype=np.int64)
    k = int(min(n_splits, np.bincount(y).min(), len(set(groups.tolist()))))
    if k < 2:
        return float("nan"), [*notes, "text AUC: too few rows or patients per label for CV"]
    folds = grouped_folds(y, groups, k, random_state=random_state)
    X = text.to_numpy(dtype=object)
    oof, _ = cross_val_proba(lambda: _text_model(random_state), X, y, folds, len(classes))
    if len(classes) == 2:
        return float(weighted_auc(y == 1, oof[:, 1])[0]), notes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmean([weighted_auc(y == c, oof[:, c])[0] for c in range(len(classes))])), notes


def _top_ngrams(text: pd.Series, labels: pd.Series, top: int, random_state: int) -> pd.DataFrame:
    columns = ["label", "ngram", "weight"]
    if labels.nunique() < 2 or not text.str.strip().astype(bool).any():
        return pd.DataFrame(columns=columns)
    model = _text_model(random_state).fit(text.to_numpy(dtype=object), labels.to_numpy(dtype=object))
    vocabulary = model.named_steps["tfidf"].get_feature_names_out()
    classifier = model.named_steps["model"]
    coefficients = np.vstack([estimator.coef_[0] for estimator in classifier.estimators_])
    if coefficients.shape[0] == 1:  # binary: one model, positive towards classes_[1]
        coefficients = np.vstack([-coefficients[0], coefficients[0]])
    rows = []
    for label, weights in zip(classifier.classes_, coefficients, strict=True):
        for index in np.argsort(-weights)[:top]:
            if weights[index] > 0:
                rows.append({"label": label, "ngram": vocabulary[index], "weight": float(weights[index])})
    return pd.DataFrame(rows, columns=columns)
