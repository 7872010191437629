"""core.labels.merge: the three-way merge offered after a save conflict."""

from __future__ import annotations

import numpy as np

from core.labels.merge import merge_mappings


def test_each_cluster_takes_the_side_that_changed_it():
    base = {0: ("Normal", None), 1: ("DCM", "I42.0"), 2: ("HCM", "I42.2"), 3: ("MI", "I25.2")}
    yours = {0: ("Normal", ""), 1: ("Dilated", "i420"), 2: ("HCM", "I42.2"), 3: ("Infarct", "I21.9")}
    theirs = {0: ("Normal", np.nan), 1: ("DCM", "I42.0"), 2: ("Hypertrophic", "I42.1"), 3: ("Old MI", "I25.2"),
              4: ("New", None)}
    merged = merge_mappings(base, yours, theirs)
    assert merged[["cluster", "disease", "icd10_code", "resolution"]].values.tolist() == [
        [0, "Normal", "", "same"],
        [1, "Dilated", "i420", "yours"],           # only you changed it
        [2, "Hypertrophic", "I42.1", "theirs"],    # only they changed it
        [3, "Infarct", "I21.9", "both changed"],   # both did: yours proposed, flagged
        [4, "New", "", "theirs"],                  # a cluster only they added
    ]
    assert merged.loc[3, ["theirs_disease", "theirs_code"]].tolist() == ["Old MI", "I25.2"]


def test_both_starting_from_nothing():
    merged = merge_mappings(None, {0: ("A", None), 1: ("B", None)}, {0: ("A", None), 1: ("C", None)})
    assert merged["resolution"].tolist() == ["same", "both changed"]
    assert merged["disease"].tolist() == ["A", "B"]
