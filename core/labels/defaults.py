"""Default cluster -> (disease, ICD-10-CM code) suggestions from each cluster's majority label.

Choices (each code is checked against the code set by the tests):

* "Normal" / "No Finding" get **no code**. Z03.89 ("...suspected diseases and conditions ruled
  out") describes an encounter after a work-up, not an image without findings; coding a normal
  cluster with it would put an encounter claim on patients who never had one.
* "Myocardial infarction" -> **I25.2 Old myocardial infarction**. The demo cohort draws the
  infarct as a thinned, late-enhancing wall segment, which is a healed scar: acute infarcts
  are not thin. Labels that say "acute" (or "STEMI") get I21.9.
* "Hypertrophic cardiomyopathy" -> **I42.2 Other hypertrophic cardiomyopathy**: short-axis
  images show wall thickness, not outflow-tract obstruction, so I42.1 (obstructive) would claim
  more than the image shows. "Obstructive hypertrophic cardiomyopathy" gets I42.1.
* "Abnormal right ventricle" (ACDC's RV class, mostly ARVC) -> I42.8 Other cardiomyopathies.
* COVID-19 -> U07.1 (with ARDS too: U07.1 is sequenced first; J80 is the secondary code a
  coder adds). SARS -> J12.81 Pneumonia due to SARS-associated coronavirus. "Streptococcus"
  in covid-chestxray is pneumococcal pneumonia -> J13. Other organisms map to the matching
  "Pneumonia due to ..." code.

Labels are matched case- and punctuation-insensitively, with common abbreviations (DCM, HCM,
MI, NOR, MINF, ...). A label such as "Pneumonia/Viral/COVID-19" is matched by its most specific
known part (last first); "COVID-19, ARDS"-style lists by their first known part.
"""

from __future__ import annotations

import re
from collections.abc import Mapping as MappingABC
from dataclasses import dataclass

import pandas as pd

__all__ = ["DEFAULT_LABEL_CODES", "Mapping", "majority_labels", "suggest_default_mapping"]


@dataclass(frozen=True)
class Mapping:
    """What one cluster means: a disease name and its ICD-10-CM code (``None`` when the cluster
    should carry no code, e.g. normal scans, or when nobody has decided yet)."""

    disease: str
    code: str | None = None


# canonical disease name -> (code or None, other spellings that mean the same)
DEFAULT_LABEL_CODES: dict[str, tuple[str | None, tuple[str, ...]]] = {
    # cardiac MRI (demo cohort, ACDC, M&Ms)
    "Normal": (None, ("nor", "healthy", "normal heart", "control")),
    "No finding": (None, ("no findings", "nofinding")),
    "Dilated cardiomyopathy": ("I42.0", ("dcm", "dilated")),
    "Hypertrophic cardiomyopathy": ("I42.2", ("hcm", "hypertrophic", "hypertrophic cardiomyopathy non obstructive")),
    "Obstructive hypertrophic cardiomyopathy": ("I42.1", ("hocm",)),
    "Myocardial infarction": ("I25.2", ("mi", "minf", "infarction", "old myocardial infarction", "previous myocardial infarction", "myocardial infarct")),
    "Acute myocardial infarction": ("I21.9", ("ami", "stemi", "nstemi", "acute mi")),
    "Heart failure": ("I50.9", ("hf", "chf", "congestive heart failure")),
    "Cardiomyopathy": ("I42.9", ("cardiomyopathy unspecified",)),
    "Abnormal right ventricle": ("I42.8", ("rv", "arv", "arvc", "arvd", "arrhythmogenic right ventricular cardiomyopathy")),
    # chest X-ray / CT (covid-chestxray and similar)
    "COVID-19": ("U07.1", ("covid", "covid19", "sars cov 2")),
    "COVID-19 with ARDS": ("U07.1", ("covid 19 ards", "covid 19 with ards")),
    "Pneumonia": ("J18.9", ("pneumonia unspecified",)),
    "Acute respiratory distress syndrome": ("J80", ("ards",)),
    "SARS": ("J12.81", ("sars pneumonia", "severe acute respiratory syndrome")),
    "Viral pneumonia": ("J12.9", ("viral",)),
    "Bacterial pneumonia": ("J15.9", ("bacterial",)),
    "Pneumocystis pneumonia": ("B59", ("pneumocystis", "pcp", "pneumocystosis")),
    "Pneumococcal pneumonia": ("J13", ("streptococcus", "streptococcus pneumoniae", "pneumococcus")),
    "Klebsiella pneumonia": ("J15.0", ("klebsiella",)),
    "Mycoplasma pneumonia": ("J15.7", ("mycoplasma", "mycoplasma bacterial pneumonia")),
    "Legionnaires' disease": ("A48.1", ("legionella", "legionnaires disease")),
    "Lipoid pneumonia": ("J69.1", ("lipoid",)),
    "Varicella pneumonia": ("B01.2", ("varicella",)),
    "E. coli pneumonia": ("J15.5", ("e coli", "escherichia coli")),
    "Chlamydial pneumonia": ("J16.0", ("chlamydophila", "chlamydia")),
    "Influenza with pneumonia": ("J11.00", ("influenza", "flu")),
    "Tuberculosis": ("A15.0", ("tb", "pulmonary tuberculosis")),
}


def _key(label: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9]+", " ", label.lower()).split())


_LOOKUP: dict[str, str] = {}
for _name, (_code, _aliases) in DEFAULT_LABEL_CODES.items():
    for _alias in (_name, *_aliases):
        _LOOKUP[_key(_alias)] = _name


def _match(label: str) -> str | None:
    exact = _LOOKUP.get(_key(label))
    if exact is not None:
        return exact
    # Hierarchies name the most specific class last; comma lists name the main finding first.
    for part in reversed(label.split("/")):
        hit = _LOOKUP.get(_key(part))
        if hit is not None:
            return hit
    for part in re.split(r"[,;+&]", label):
        hit = _LOOKUP.get(_key(part))
        if hit is not None:
            return hit
    return None


def suggest_default_mapping(cluster_labels: MappingABC[int, str | None]) -> dict[int, Mapping]:
    """A first-guess mapping for each cluster from its majority ground-truth label.

    Parameters
    ----------
    cluster_labels : dict cluster id -> majority label (``None`` or NaN when the data has no
        ground truth), e.g. from ``majority_labels``.

    Returns
    -------
    dict cluster id -> ``Mapping``. Known labels (see ``DEFAULT_LABEL_CODES``) get their
    canonical disease name and code; anything else gets disease ``"Cluster k"`` and code
    ``None``, for a person to fill in. Every cluster in the input is in the output.

    Raises ``ValueError`` if a cluster id is not an integer.
    """
    out: dict[int, Mapping] = {}
    for cluster, label in cluster_labels.items():
        try:
            cluster_id = int(cluster)
        except (TypeError, ValueError) as err:
            raise ValueError(f"cluster id {cluster!r} must be an integer") from err
        name = _match(label) if isinstance(label, str) and label.strip() else None
        if name is None:
            out[cluster_id] = Mapping(f"Cluster {cluster_id}", None)
        else:
            out[cluster_id] = Mapping(name, DEFAULT_LABEL_CODES[name][0])
    return out


def majority_labels(clusters: pd.Series, labels: pd.Series) -> dict[int, str | None]:
    """The most common known label in each cluster.

    Parameters
    ----------
    clusters : Series of shape (n_rows,), row id -> cluster id (NaN rows are not in a cluster
        and are skipped).
    labels : Series of shape (n_rows,), row id -> ground-truth label (NaN/None = unknown),
        aligned with ``clusters`` by index.

    Returns
    -------
    dict cluster id -> label, or ``None`` for a cluster with no known label. Ties go to the
    label that sorts first, so the result does not depend on row order.
    """
    frame = pd.DataFrame({"cluster": clusters, "label": labels.reindex(clusters.index)})
    frame = frame.dropna(subset=["cluster"])
    out: dict[int, str | None] = {}
    for cluster, group in frame.groupby("cluster", sort=True):
        counts = group["label"].dropna().astype(str).value_counts()
        if counts.empty:
            out[int(cluster)] = None
        else:
            top = counts.max()
            out[int(cluster)] = sorted(counts.index[counts == top])[0]
    return out

