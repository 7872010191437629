"""An audit's images take the clusters of the Agreement page's cohort (patient or image level),
and clusters dominated by one problem are named in plain sentences."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.audit.runs import clusters_of_images, dominated_sentences

IMAGES = pd.DataFrame({"image_id": ["a1", "a2", "b1", "c1", "d1"], "patient_id": ["A", "A", "B", "C", "D"]})


def test_patient_level_clusters_reach_every_image_of_the_patient():
    table = pd.DataFrame({"patient_id": ["B", "A", "C"]})  # D was filtered out
    clusters = clusters_of_images(IMAGES, table, np.array([1, 0, -1]), "patient")
    assert clusters.tolist() == [0, 0, 1, -1, -2]


def test_image_level_clusters_match_by_image_id():
    table = pd.DataFrame({"image_id": ["c1", "a2", "a1", "b1"], "patient_id": ["C", "A", "A", "B"]})
    clusters = clusters_of_images(IMAGES, table, np.array([3, 2, 1, 0]), "image")
    assert clusters.tolist() == [1, 2, 0, 3, -2]


def test_bad_inputs_are_refused():
    table = pd.DataFrame({"patient_id": ["A"]})
    with pytest.raises(ValueError, match="2 cluster labels for 1 cohort rows"):
        clusters_of_images(IMAGES, table, np.array([0, 1]), "patient")
    with pytest.raises(ValueError, match="level="):
        clusters_of_images(IMAGES, table, np.array([0]), "series")


def test_dominated_clusters_are_named_by_their_problem_or_duplicate_set():
    summary = pd.DataFrame([
        {"cluster": 0, "size": 10, "top_problem": "blurry", "top_share": 0.8, "largest_set_share": 0.1, "dominated": True},
        {"cluster": 1, "size": 6, "top_problem": "dark", "top_share": 0.2, "largest_set_share": 0.5, "dominated": True},
        {"cluster": 2, "size": 9, "top_problem": "", "top_share": 0.0, "largest_set_share": 0.0, "dominated": False},
        {"cluster": -2, "size": 7, "top_problem": "odd_size", "top_share": 1.0, "largest_set_share": 0.0, "dominated": True},
    ])
    assert dominated_sentences(summary) == [
        'C0: 80% of its 10 images are flagged "blurry"',
        "C1: 50% of its 6 images are copies from one duplicate set",
    ]
