"""A cohort with planted data-quality problems, made from real images, whose answer is known.

Used by the tests and ``benchmarks/audit_*.py`` to measure the audit's recall and precision per
kind of problem. From a list of source images (real radiographs) it writes, under new patient
ids unless said otherwise:

* ``resaved``: the decoded picture saved again as PNG (other bytes, same pixels): an exact
  duplicate;
* ``crop``: 6-12% cut from each side, saved as PNG;
* ``rescaled``: 50-75% of the size, saved as PNG;
* ``jpeg``: re-encoded as JPEG at quality 40-70;
* ``blank``: a uniform black, grey or white frame with a little noise;
* ``inverted``: a source shown inverted (1 - x), replacing that source (same patient);

and writes ``planted.csv`` (``path, patient_id, label, modality, view``: an ``image-csv``
layout) plus ``truth.csv`` (``path, kind, source_path``). Label flips are planted on an ingested
dataset's table instead (:func:`flip_labels`), since they change no file.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from core.audit.fingerprints import to_pil
from core.pixels import load_pixels

COPY_KINDS = ("resaved", "crop", "rescaled", "jpeg")
ALL_KINDS = (*COPY_KINDS, "blank", "inverted")


@dataclass(frozen=True)
class Source:
    """One real image to plant problems from."""

    path: str
    patient_id: str
    label: str
    modality: str = "X-ray"
    view: str = ""


def _save(image: Image.Image, path: Path, **options) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)


def make_planted_cohort(
    sources: Sequence[Source],
    out_dir: str | Path,
    *,
    per_kind: int = 10,
    n_blank: int = 5,
    n_inverted: int = 8,
    seed: int = 0,
) -> tuple[Path, pd.DataFrame]:
    """Write the cohort; returns (path of planted.csv, truth table).

    ``sources`` must hold at least ``4 * per_kind + n_inverted`` images (each planted copy has
    its own source, so that one source never has two copies). Every source is written as a PNG
    too (the originals of the cohort). Raises ValueError when there are too few sources.
    """
    need = len(COPY_KINDS) * per_kind + n_inverted
    if len(sources) < need:
        raise ValueError(f"{len(sources)} sources given; per_kind={per_kind} and n_inverted={n_inverted} need {need}")
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    rows: list[dict] = []
    truth: list[dict] = []
    inverted_sources = set(range(len(COPY_KINDS) * per_kind, need))
    for number, source in enumerate(sources):
        values = load_pixels(source.path)
        original = out / "images" / f"orig-{number:04d}.png"
        if number in inverted_sources:
            _save(to_pil(1.0 - values), original)
            truth.append({"path": str(original), "kind": "inverted", "source_path": ""})
        else:
            _save(to_pil(values), original)
            truth.append({"path": str(original), "kind": "original", "source_path": ""})
        rows.append({"path": str(original), "patient_id": source.patient_id, "label": source.label,
                     "modality": source.modality, "view": source.view})
        if number >= len(COPY_KINDS) * per_kind:
            continue
        kind = COPY_KINDS[number // per_kind]
        picture = to_pil(values)
        copy = out / "images" / f"{kind}-{number:04d}.{'jpg' if kind == 'jpeg' else 'png'}"
        if kind == "resaved":
            _save(picture, copy, optimize=True)
        elif kind == "crop":
            w, h = picture.size
            left, top, right, bottom = (rng.uniform(0.06, 0.12, size=4) * [w, h, w, h]).astype(int)
            _save(picture.crop((left, top, w - right, h - bottom)), copy)
        elif kind == "rescaled":
            factor = rng.uniform(0.5, 0.75)
            w, h = picture.size
            _save(picture.resize((max(8, int(w * factor)), max(8, int(h * factor))), Image.Resampling.BILINEAR), copy)
        else:
            _save(picture.convert("RGB") if picture.mode not in ("L", "RGB") else picture, copy,
                  quality=int(rng.integers(40, 71)))
        rows.append({"path": str(copy), "patient_id": f"planted-{kind}-{number:04d}", "label": source.label,
                     "modality": source.modality, "view": source.view})
        truth.append({"path": str(copy), "kind": kind, "source_path": str(original)})
    for number in range(n_blank):
        level = [0.0, 0.5, 1.0, 0.02, 0.3][number % 5]
        size = (int(rng.integers(256, 512)), int(rng.integers(256, 512)))
        noise = rng.normal(0.0, 0.003, size=size)
        blank = out / "images" / f"blank-{number:04d}.png"
        _save(to_pil(np.clip(level + noise, 0, 1)), blank)
        rows.append({"path": str(blank), "patient_id": f"planted-blank-{number:04d}", "label": sources[number].label,
                     "modality": "X-ray", "view": ""})
        truth.append({"path": str(blank), "kind": "blank", "source_path": ""})
    csv_path = out / "planted.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "patient_id", "label", "modality", "view"])
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "path": str(Path(row["path"]).relative_to(out))})
    truth_frame = pd.DataFrame(truth)
    for column in ("path", "source_path"):
        truth_frame[column] = truth_frame[column].map(lambda p: str(Path(p).resolve()) if p else "")
    truth_frame.to_csv(out / "truth.csv", index=False)
    return csv_path, truth_frame


def flip_labels(labels: pd.Series, *, fraction: float = 0.1, seed: int = 0) -> tuple[pd.Series, np.ndarray]:
    """``labels`` with ``fraction`` of the labelled rows changed to another (random) class;
    returns (new labels, positions flipped)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction={fraction} must be in (0, 1)")
    rng = np.random.default_rng(seed)
    labels = labels.copy()
    labelled = np.flatnonzero(labels.notna().to_numpy())
    classes = sorted(labels.dropna().astype(str).unique())
    if len(classes) < 2:
        raise ValueError("flip_labels needs at least two classes")
    flipped = np.sort(rng.choice(labelled, size=max(1, int(round(fraction * len(labelled)))), replace=False))
    for position in flipped:
        current = str(labels.iloc[position])
        labels.iloc[position] = rng.choice([c for c in classes if c != current])
    return labels, flipped


def score_planted(audit, dataset_images: pd.DataFrame, truth: pd.DataFrame, thresholds=None, *,
                  same_picture: Sequence[set[str]] = ()) -> pd.DataFrame:
    """Recall and precision of the audit per planted kind.

    Every row shows a *picture*: an original shows its own, a copy shows its source's. Sources
    that are themselves one picture filed under two patients (found by the audit and confirmed
    by eye) are named in ``same_picture`` as sets of their patient ids. A duplicate pair the
    audit reports is correct when both rows show the same picture.

    Copies: a planted pair (copy, its source) is found when the audit pairs them (``resaved``
    must be found as ``exact``); precision is the share of the audit's pairs involving a copy
    of that kind that are correct; ``all duplicate pairs`` counts every pair the audit reports.
    Blank and inverted: rows flagged with that image issue against rows planted so.
    Returns one row per kind: kind, planted, found, flagged, recall, precision.
    """
    from core.audit.duplicates import Thresholds

    thresholds = thresholds or Thresholds()
    resolved = dataset_images["path"].map(lambda p: str(Path(p).resolve()))
    row_of = {path: row for row, path in enumerate(resolved)}
    truth = truth.assign(row=truth["path"].map(row_of),
                         source_row=truth["source_path"].map(lambda p: row_of.get(p, -1) if isinstance(p, str) and p else -1))
    patients = dataset_images["patient_id"].astype(str).to_numpy()
    group_of = {pid: min(group) for group in same_picture for pid in group}
    picture = {}
    for row, source in zip(truth["row"], truth["source_row"], strict=True):
        shown = source if source >= 0 else row
        picture[int(row)] = group_of.get(patients[shown], f"row-{shown}")
    pairs, _ = audit.duplicates(thresholds)
    found = {(int(i), int(j)): kind for i, j, kind in zip(pairs["i"], pairs["j"], pairs["kind"], strict=True)}
    correct = {k: picture.get(k[0]) == picture.get(k[1]) for k in found}
    kind_of_row = dict(zip(truth["row"], truth["kind"], strict=True))
    records = []
    for kind in COPY_KINDS:
        planted = truth[truth["kind"] == kind]
        keys = {(min(r, s), max(r, s)) for r, s in zip(planted["row"], planted["source_row"], strict=True)}
        hits = [k for k in keys if k in found and (kind != "resaved" or found[k] == "exact")]
        involving = [k for k in found if kind_of_row.get(k[0]) == kind or kind_of_row.get(k[1]) == kind]
        records.append({"kind": kind, "planted": len(keys), "found": len(hits), "flagged": len(involving),
                        "recall": len(hits) / len(keys) if keys else float("nan"),
                        "precision": sum(correct[k] for k in involving) / len(involving) if involving else float("nan")})
    planted_pairs = {(min(r, s), max(r, s)) for r, s in zip(truth["row"], truth["source_row"], strict=True) if s >= 0}
    records.append({"kind": "all duplicate pairs", "planted": len(planted_pairs),
                    "found": sum(k in found for k in planted_pairs), "flagged": len(found),
                    "recall": sum(k in found for k in planted_pairs) / len(planted_pairs) if planted_pairs else float("nan"),
                    "precision": sum(correct.values()) / len(found) if found else float("nan")})
    issues = audit.image_issues
    for kind in ("blank", "inverted"):
        planted_rows = set(truth.loc[truth["kind"] == kind, "row"].astype(int))
        flagged = set(issues.loc[issues["issue"] == kind, "row"].astype(int))
        hits = planted_rows & flagged
        records.append({"kind": kind, "planted": len(planted_rows), "found": len(hits), "flagged": len(flagged),
                        "recall": len(hits) / len(planted_rows) if planted_rows else float("nan"),
                        "precision": len(hits) / len(flagged) if flagged else float("nan")})
    return pd.DataFrame.from_records(records)


def score_label_flips(audit, flipped_rows: np.ndarray) -> dict[str, float]:
    """Recall and precision of cleanlab's label issues against the rows :func:`flip_labels`
    changed, plus recall within the first ``len(flipped)`` of the ranking."""
    flipped = set(int(r) for r in flipped_rows)
    flagged = audit.label_issues["row"].astype(int).tolist()
    hits = flipped & set(flagged)
    top = set(flagged[: len(flipped)])
    return {"flipped": len(flipped), "flagged": len(flagged), "found": len(hits),
            "recall": len(hits) / len(flipped) if flipped else float("nan"),
            "precision": len(hits) / len(flagged) if flagged else float("nan"),
            "recall_at_n_flipped": len(flipped & top) / len(flipped) if flipped else float("nan")}
