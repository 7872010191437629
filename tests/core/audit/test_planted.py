"""The audit against planted problems in a cohort made from real images, whose answer is known.

From 60 real chest films of the covid-chestxray collection (different patients) the test plants,
under new patient ids: 10 re-saved copies (exact duplicates), 10 crops, 10 rescaled and 10
JPEG-recompressed copies, 5 blank frames, and 8 films shown inverted. Label flips are planted on
the demo cohort (its four groups are learnable, so a flipped label is a real contradiction).
Goals (issue 13): recall >= 0.95 for exact/re-saved copies, >= 0.8 for crops and recompressions,
precision >= 0.9. Flipped labels have no goal in the issue; the floors below sit under what was
measured (recall 0.88, precision 0.52 with efficientnet-lite0: a 4-class model that is right
on 78% of slices also flags slices it simply gets wrong).
"""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest

from core.audit.planted import (
    Source,
    flip_labels,
    make_planted_cohort,
    score_label_flips,
    score_planted,
)
from core.audit.runs import audit_dataset, summary_lines
from core.ingest import ingest
from core.runs import RunStore


@pytest.fixture(scope="module")
def planted(covid_dir, cache_env, tmp_path_factory):
    metadata = pd.read_csv(covid_dir / "metadata.csv")
    films = metadata[(metadata["modality"] == "X-ray") & metadata["view"].isin(["PA", "AP"])]
    films = films[films["filename"].map(lambda n: (covid_dir / "images" / n).is_file())]
    films = films.drop_duplicates("patientid").sample(60, random_state=0)
    sources = [Source(str(covid_dir / "images" / row.filename), str(row.patientid), str(row.finding), "X-ray", str(row.view))
               for row in films.itertuples()]
    root = tmp_path_factory.mktemp("planted")
    csv_path, truth = make_planted_cohort(sources, root / "cohort", per_kind=10, n_blank=5, n_inverted=8, seed=0)
    dataset = ingest(csv_path, cache_env / "datasets" / "planted", layout="image-csv").dataset
    assert len(dataset.images) == 60 + 40 + 5
    audit = audit_dataset(dataset, encoder="efficientnet-lite0", store=RunStore(cache_env / "runs"))
    return dataset, truth, audit


def test_planted_duplicates_blank_and_inverted_are_found(planted):
    dataset, truth, audit = planted
    # Patients 192 and 196 of the collection are one film (the second with "day 1" written on
    # it): the audit pairs them and a copy of one with the other, correctly. Seen by eye.
    scores = score_planted(audit, dataset.images, truth, same_picture=[{"192", "196"}]).set_index("kind")
    print("\n" + scores.to_string())  # the README table: pytest -s shows it
    assert scores.loc["resaved", "recall"] >= 0.95
    for kind in ("crop", "rescaled", "jpeg"):
        assert scores.loc[kind, "recall"] >= 0.8, kind
    for kind in ("resaved", "crop", "rescaled", "jpeg", "all duplicate pairs", "blank", "inverted"):
        assert scores.loc[kind, "precision"] >= 0.9, kind
    assert scores.loc["blank", "recall"] == 1.0
    assert scores.loc["inverted", "recall"] >= 0.95


def test_planted_copies_are_flagged_across_patients_and_summarised(planted):
    _, _, audit = planted
    pairs, sets = audit.duplicates()
    copies = pairs[pairs["patient_id_b"].str.startswith("planted-") | pairs["patient_id_a"].str.startswith("planted-")]
    assert len(copies) >= 36 and copies["cross_patient"].all()
    assert sets["cross_patient"].sum() >= 36
    text = "\n".join(summary_lines(audit))
    assert "span different patient ids" in text and "planted-" in text
    # The audit is a named run: asking again loads it.
    assert audit.key.startswith("audit-")


def test_flipped_labels_rank_high_in_cleanlabs_issues(demo40, cache_env):
    labels, flipped = flip_labels(demo40.images["label"], fraction=0.1, seed=1)
    noisy = replace(demo40, images=demo40.images.assign(label=labels))
    audit = audit_dataset(noisy, encoder="efficientnet-lite0", use_cleanvision=False, store=RunStore(cache_env / "runs"))
    scores = score_label_flips(audit, flipped)
    print(f"\nlabel flips: {scores}")
    assert scores["recall"] >= 0.8
    assert scores["precision"] >= 0.45
    issues = audit.label_issues.set_index("row")
    for row in flipped:
        if row in issues.index:  # the suggestion is the planted group, not the flipped one
            assert issues.loc[row, "given_label"] == labels.iloc[row]
            assert issues.loc[row, "suggested_label"] != labels.iloc[row]
