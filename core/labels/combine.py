"""Put clusters, the cluster mapping and patient overrides together into one labelled table."""

from __future__ import annotations

import pandas as pd

__all__ = ["LABEL_COLUMNS", "labeled_patients"]

LABEL_COLUMNS = ["cluster", "disease", "icd10_code", "icd10_description", "label_source"]
_LABEL_FIELDS = ["disease", "icd10_code", "icd10_description"]


def _label_table(frame: pd.DataFrame | None, key: str, what: str) -> pd.DataFrame:
    if frame is None or frame.empty:
        return pd.DataFrame(columns=[key, *_LABEL_FIELDS]).set_index(key)
    missing = [c for c in (key, *_LABEL_FIELDS) if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} is missing columns {missing}; it has {list(frame.columns)}")
    if frame[key].duplicated().any():
        dupes = frame.loc[frame[key].duplicated(), key].unique().tolist()
        raise ValueError(f"{what} has more than one row for {key} {dupes[:10]}")
    return frame.set_index(key)[_LABEL_FIELDS]


def labeled_patients(
    patients_df: pd.DataFrame,
    clusters: pd.Series,
    mapping_df: pd.DataFrame | None,
    overrides_df: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Every patient with their cluster and label.

    Parameters
    ----------
    patients_df : DataFrame of shape (n_patients, k) with a ``patient_id`` column.
    clusters : Series patient_id -> cluster id. Patients missing from it (e.g. no usable image)
        get cluster <NA>; entries for patients not in ``patients_df`` are ignored.
    mapping_df : ``LabelStore.current_mapping`` (cluster, disease, icd10_code,
        icd10_description, ...) or None / empty for no mapping yet.
    overrides_df : ``LabelStore.patient_overrides`` (patient_id, disease, icd10_code,
        icd10_description, ...) or None / empty.

    Returns
    -------
    DataFrame of shape (n_patients, k + 5): ``patients_df`` in its order, with ``cluster``
    (Int64), ``disease``, ``icd10_code``, ``icd10_description`` and ``label_source``:
    "override" when the patient has an override (it wins over the cluster), "cluster" when the
    patient's cluster is in the mapping, "none" otherwise (no cluster, or cluster not mapped).
    Same-named columns already in ``patients_df`` are replaced.

    Raises ``ValueError`` if ``patients_df`` has no ``patient_id`` column or repeats a patient,
    ``clusters`` repeats a patient, or a mapping/override table lacks columns or repeats a key.
    """
    if "patient_id" not in patients_df.columns:
        raise ValueError(f"patients_df needs a 'patient_id' column; it has {list(patients_df.columns)}")
    if patients_df["patient_id"].duplicated().any():
        dupes = patients_df.loc[patients_df["patient_id"].duplicated(), "patient_id"].unique().tolist()
        raise ValueError(f"patients_df repeats patient_id {dupes[:10]}")
    if clusters.index.duplicated().any():
        dupes = clusters.index[clusters.index.duplicated()].unique().tolist()
        raise ValueError(f"clusters has more than one cluster for patient_id {dupes[:10]}")
    mapping = _label_table(mapping_df, "cluster", "mapping_df")
    overrides = _label_table(overrides_df, "patient_id", "overrides_df")
    # Keys compare as strings / ints whatever dtype each table came back with.
    mapping.index = pd.Index([int(c) for c in mapping.index], dtype="int64")
    overrides.index = overrides.index.astype(str)

    out = patients_df.drop(columns=[c for c in LABEL_COLUMNS if c in patients_df.columns]).copy()
    patient_keys = out["patient_id"].astype(str)
    by_patient = pd.Series(clusters.to_numpy(), index=clusters.index.astype(str))
    cluster = pd.array(patient_keys.map(by_patient).to_numpy(), dtype="Float64").astype("Int64")
    out["cluster"] = cluster

    from_cluster = mapping.reindex(pd.Index(cluster.fillna(-(2**62)), dtype="int64"))
    in_mapping = pd.Series(cluster, index=out.index).isin(mapping.index).fillna(False).to_numpy(dtype=bool)
    has_override = patient_keys.isin(overrides.index).to_numpy()
    from_override = overrides.reindex(patient_keys)

    for field in _LABEL_FIELDS:
        values = from_cluster[field].to_numpy(dtype=object)
        values = [
            o if use_override else (c if mapped else None)
            for o, c, use_override, mapped in zip(
                from_override[field].to_numpy(dtype=object), values, has_override, in_mapping, strict=True
            )
        ]
        out[field] = pd.Series(values, index=out.index, dtype=object).where(lambda s: s.notna(), None)
    out["label_source"] = [
        "override" if o else ("cluster" if m else "none") for o, m in zip(has_override, in_mapping, strict=True)
    ]
    return out
