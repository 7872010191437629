"""``notes_by_row`` on a dataset whose notes column holds no note at all (the Map page asks for
a selected patient's note draft on every dataset)."""

from __future__ import annotations

import pandas as pd

from core.explain.report_draft import notes_by_row


def test_no_note_anywhere_gives_none_for_every_row() -> None:
    images = pd.DataFrame({"patient_id": ["a", "b", "a"], "text": [None, None, float("nan")]})
    table = pd.DataFrame({"patient_id": ["b", "a"]}, index=[5, 7])
    notes = notes_by_row(images, table, "patient")
    assert notes.tolist() == [None, None] and notes.index.tolist() == [5, 7]


def test_a_patients_distinct_notes_are_joined_in_image_order() -> None:
    images = pd.DataFrame({"patient_id": ["a", "b", "a", "a"], "text": ["left effusion ", None, "nodule", "left effusion"]})
    assert notes_by_row(images, pd.DataFrame({"patient_id": ["a", "b"]}), "patient").tolist() == ["left effusion nodule", None]
