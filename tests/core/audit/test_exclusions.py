"""core.exclusions: decisions on audit findings are versioned with who and when, refuse stale
edits and viewers, and ``excluded_ids`` gives the image ids every cohort filter leaves out.

Every test runs on SQLite and on a real PostgreSQL (``label_db_url`` in tests/conftest.py).
"""

from __future__ import annotations

import pytest

from core.auth import AccessStore, User
from core.exclusions import ConflictError, DecisionStore, excluded_ids, finding_id

ANN = User(id="https://idp.example|ann", email="ann@example.org", name="Ann", role="labeler", source="claim")
BOB = User(id="https://idp.example|bob", email="bob@example.org", name="Bob", role="admin", source="table")
VIEWER = User(id="https://idp.example|vic", email="vic@example.org", name="Vic", role="viewer", source="claim")


@pytest.fixture
def store(label_db_url: str):
    with DecisionStore(label_db_url) as decisions:
        yield decisions


def test_finding_ids_are_stable_and_distinguish_kind_detail_and_images():
    one = finding_id("duplicate", ["b", "a"])
    assert one == finding_id("duplicate", ["a", "b", "a"])
    assert one.startswith("duplicate-") and len(one) == len("duplicate-") + 16
    assert finding_id("image", ["a"], "blurry") != finding_id("image", ["a"], "dark")
    assert finding_id("duplicate", ["a", "b"]) != finding_id("duplicate", ["a", "c"])
    with pytest.raises(ValueError, match="must be one of"):
        finding_id("typo", ["a"])
    with pytest.raises(ValueError, match="at least one image id"):
        finding_id("label", [])


def test_decisions_are_versioned_with_author_and_time_and_feed_excluded_ids(store: DecisionStore, label_db_url: str):
    dup = finding_id("duplicate", ["img-1", "img-2"])
    blur = finding_id("image", ["img-3"], "blurry")
    assert store.excluded_ids("covid") == frozenset()
    first = store.decide("covid", dup, "excluded", ["img-2"], user=ANN, base_version=None, note="same film as img-1")
    assert (first.version, first.created) == (1, True)
    store.decide("covid", blur, "not_a_problem", ["img-3"], user=ANN, base_version=None)
    assert store.excluded_ids("covid") == frozenset({"img-2"})
    assert excluded_ids("covid", url=label_db_url) == frozenset({"img-2"})
    assert excluded_ids("other-dataset", url=label_db_url) == frozenset()

    again = store.decide("covid", dup, "excluded", ["img-2"], user=BOB, base_version=1)
    assert (again.version, again.created) == (1, False)  # nothing changed: no version
    reopened = store.decide("covid", dup, "open", ["img-2"], user=BOB, base_version=1)
    assert reopened.version == 2
    assert store.excluded_ids("covid") == frozenset()

    history = store.history("covid", dup)
    assert history["version"].tolist() == [1, 2]
    assert history["decision"].tolist() == ["excluded", "open"]
    assert history["author"].tolist() == [ANN.label, BOB.label]
    assert history["author_id"].tolist() == [ANN.id, BOB.id]
    assert history["note"].iloc[0] == "same film as img-1"
    assert history["created_at"].dt.tz is not None
    current = store.current("covid").set_index("finding_id")
    assert current.loc[blur, "decision"] == "not_a_problem"
    assert current.loc[dup, "image_ids"] == ["img-2"]
    events = AccessStore(label_db_url).events()
    assert {"audit.excluded", "audit.not_a_problem", "audit.open"} <= set(events["action"])


def test_a_stale_decision_is_refused_and_saves_nothing(store: DecisionStore):
    finding = finding_id("label", ["img-9"])
    store.decide("ds", finding, "excluded", ["img-9"], user=ANN, base_version=None)
    with pytest.raises(ConflictError) as caught:
        store.decide("ds", finding, "not_a_problem", ["img-9"], user=BOB, base_version=None)
    assert caught.value.current_version == 1
    assert store.version("ds", finding) == 1
    assert store.excluded_ids("ds") == frozenset({"img-9"})


def test_viewers_and_bad_input_are_refused(store: DecisionStore):
    finding = finding_id("outlier", ["img-1"])
    for user in (VIEWER, None):
        with pytest.raises(PermissionError):
            store.decide("ds", finding, "excluded", ["img-1"], user=user, base_version=None)
    with pytest.raises(ValueError, match="decision="):
        store.decide("ds", finding, "delete", ["img-1"], user=ANN, base_version=None)
    with pytest.raises(ValueError, match="image ids"):
        store.decide("ds", finding, "excluded", [], user=ANN, base_version=None)
    with pytest.raises(ValueError, match="never decided"):
        store.decide("ds", finding, "open", ["img-1"], user=ANN, base_version=None)
    with pytest.raises(ValueError, match="base_version"):
        store.decide("ds", finding, "excluded", ["img-1"], user=ANN, base_version=0)
    assert store.history("ds").empty


def test_exclusions_travel_with_the_exported_table(demo_dataset):
    from core.exclusions import excluded_per_patient
    from core.export import labeled_export

    images = demo_dataset.images
    first, second = images["patient_id"].astype(str).unique()[:2]
    ids = images.loc[images["patient_id"].astype(str) == first, "image_id"].head(2).tolist()
    ids += images.loc[images["patient_id"].astype(str) == second, "image_id"].head(1).tolist()
    per_patient = excluded_per_patient(images, ids)
    assert per_patient == {first: 2, second: 1}
    patients = demo_dataset.patients
    labels = [0] * len(patients)
    table = labeled_export(patients, patients["patient_id"].to_numpy(), labels, None, deidentify=False, is_admin=True,
                           excluded_images=per_patient).table.set_index("patient_id")
    assert table.loc[first, "excluded_images"] == 2 and table.loc[second, "excluded_images"] == 1
    assert table["excluded_images"].sum() == 3
    assert "excluded_images" not in labeled_export(patients, patients["patient_id"].to_numpy(), labels, None).table
