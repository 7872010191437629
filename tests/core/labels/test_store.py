"""core.labels.store: versioned mappings and overrides, conflicts instead of last-writer-wins,
no version for a save that changes nothing, and only users allowed to label may write.

Every test runs on SQLite and on a real PostgreSQL (``label_db_url`` in tests/conftest.py).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest

from core.auth import AccessStore, User
from core.labels import ConflictError, LabelStore, SaveResult, suggest_default_mapping

ANN = User(id="https://idp.example|ann", email="ann@example.org", name="Ann", role="labeler", source="claim")
BOB = User(id="https://idp.example|bob", email="bob@example.org", name="Bob", role="admin", source="table")
VIEWER = User(id="https://idp.example|vic", email="vic@example.org", name="Vic", role="viewer", source="claim")
DEMO_GROUPS = ["Normal", "Dilated cardiomyopathy", "Hypertrophic cardiomyopathy", "Myocardial infarction"]


@pytest.fixture
def store(label_db_url: str):
    with LabelStore(label_db_url) as label_store:
        yield label_store


def test_empty_store_has_empty_frames(store: LabelStore):
    assert store.current_mapping("ds", "k").empty
    assert list(store.current_mapping("ds", "k").columns) == [
        "cluster", "disease", "icd10_code", "icd10_description", "version", "author", "created_at"
    ]
    assert store.history("ds", "k").empty
    assert store.patient_overrides("ds").empty
    assert store.undo_target("ds", "k") is None
    assert store.override_version("ds", "p1") is None


def test_save_then_reload_in_a_new_store_survives_restart(label_db_url: str):
    before = datetime.now(UTC)
    with LabelStore(label_db_url) as first:
        result = first.save_mapping("demo", "kmeans-4", {1: ("DCM", "i420"), 0: ("Normal", None)},
                                    user=ANN, base_version=None)
    after = datetime.now(UTC)
    assert result == SaveResult(1)

    with LabelStore(label_db_url) as reopened:
        current = reopened.current_mapping("demo", "kmeans-4")
        history = reopened.history("demo", "kmeans-4")
    assert current["cluster"].tolist() == [0, 1]
    assert current["disease"].tolist() == ["Normal", "DCM"]
    assert pd.isna(current.loc[0, "icd10_code"]) and current.loc[1, "icd10_code"] == "I42.0"
    assert current.loc[1, "icd10_description"] == "Dilated cardiomyopathy"
    # The signed-in user's e-mail is shown and the stable id kept: never a typed name.
    assert (current["version"] == 1).all() and (current["author"] == "ann@example.org").all()
    assert set(history["author_id"]) == {"https://idp.example|ann"}
    assert str(current["created_at"].dt.tz) == "UTC"
    assert before <= current.loc[0, "created_at"].to_pydatetime() <= after


def test_versions_increase_and_history_keeps_all(store: LabelStore):
    assert store.save_mapping("ds", "k", {0: ("A", "I42.0")}, user=ANN, base_version=None).version == 1
    assert store.save_mapping("ds", "k", {0: ("B", "I42.2")}, user=BOB, base_version=1).version == 2
    assert store.save_mapping("ds", "other-key", {0: ("C", None)}, user=BOB, base_version=None).version == 1
    history = store.history("ds", "k")
    assert history[["version", "disease", "author", "action"]].values.tolist() == [
        [1, "A", "ann@example.org", "save"], [2, "B", "bob@example.org", "save"]
    ]
    assert store.current_mapping("ds", "k")["disease"].tolist() == ["B"]
    assert store.mapping_at("ds", "k", 1)["disease"].tolist() == ["A"]
    sets = store.mapping_sets("ds")
    assert sets[["clustering_key", "version"]].values.tolist() == [["k", 2], ["other-key", 1]]


def test_a_save_that_changes_nothing_adds_no_version(store: LabelStore):
    store.save_mapping("ds", "k", {0: ("A", "I42.0"), 1: ("N", None)}, user=ANN, base_version=None)
    # Same content, codes written differently and clusters in another order: still no change.
    again = store.save_mapping("ds", "k", {1: ("N", ""), 0: ("A", "i420")}, user=BOB, base_version=1)
    assert again == SaveResult(1, created=False)
    assert store.history("ds", "k")["version"].unique().tolist() == [1]
    assert store.current_mapping("ds", "k")["author"].unique().tolist() == ["ann@example.org"]


def test_a_save_from_a_stale_version_is_a_conflict_and_saves_nothing(store: LabelStore):
    store.save_mapping("ds", "k", {0: ("A", None)}, user=ANN, base_version=None)
    store.save_mapping("ds", "k", {0: ("Bob's", None)}, user=BOB, base_version=1)
    with pytest.raises(ConflictError, match="you edited version 1, but bob@example.org saved version 2") as info:
        store.save_mapping("ds", "k", {0: ("Ann's", None)}, user=ANN, base_version=1)
    assert (info.value.base_version, info.value.current_version) == (1, 2)
    assert store.current_mapping("ds", "k")["disease"].tolist() == ["Bob's"]
    # Two people both starting from nothing: the second is told, not silently overwritten.
    store.save_mapping("ds", "fresh", {0: ("first", None)}, user=ANN, base_version=None)
    with pytest.raises(ConflictError, match="you edited nothing saved"):
        store.save_mapping("ds", "fresh", {0: ("second", None)}, user=BOB, base_version=None)
    # A base version from the future is a conflict too.
    with pytest.raises(ConflictError):
        store.save_mapping("ds", "k", {0: ("x", None)}, user=ANN, base_version=9)
    assert store.history("ds", "k")["version"].tolist() == [1, 2]


def test_empty_disease_takes_the_code_description(store: LabelStore):
    store.save_mapping("ds", "k", {0: ("", "J80"), 1: (None, "u071")}, user=ANN, base_version=None)
    assert store.current_mapping("ds", "k")["disease"].tolist() == ["Acute respiratory distress syndrome", "COVID-19"]


def test_undo_restores_previous_and_is_itself_a_version(store: LabelStore):
    store.save_mapping("ds", "k", {0: ("A", "I42.0"), 1: ("N", None)}, user=ANN, base_version=None)
    store.save_mapping("ds", "k", {0: ("B", "I42.2")}, user=BOB, base_version=1)
    store.save_mapping("ds", "k", {0: ("C", "I42.9")}, user=BOB, base_version=2)

    assert store.undo_target("ds", "k") == 2
    assert store.undo("ds", "k", user=ANN, base_version=3) == SaveResult(4, restored_version=2)
    current = store.current_mapping("ds", "k")
    assert current[["cluster", "disease", "icd10_code", "version", "author"]].values.tolist() == [
        [0, "B", "I42.2", 4, "ann@example.org"]
    ]
    # A second undo keeps going back rather than flipping between two versions.
    assert store.undo("ds", "k", user=ANN, base_version=4).restored_version == 1
    assert store.current_mapping("ds", "k")["disease"].tolist() == ["A", "N"]
    assert store.undo_target("ds", "k") is None
    with pytest.raises(ValueError, match="nothing to undo.*version 5"):
        store.undo("ds", "k", user=ANN, base_version=5)

    history = store.history("ds", "k")
    assert history.drop_duplicates("version")[["version", "action", "restored_version"]].astype(object).values.tolist() == [
        [1, "save", pd.NA], [2, "save", pd.NA], [3, "save", pd.NA], [4, "undo", 2], [5, "undo", 1]
    ]
    # Saving after an undo makes that save undoable back to the restored mapping.
    store.save_mapping("ds", "k", {0: ("D", None)}, user=ANN, base_version=5)
    store.undo("ds", "k", user=ANN, base_version=6)
    assert store.current_mapping("ds", "k")["disease"].tolist() == ["A", "N"]


def test_undo_of_someone_elses_newer_save_is_a_conflict(store: LabelStore):
    store.save_mapping("ds", "k", {0: ("A", None)}, user=ANN, base_version=None)
    store.save_mapping("ds", "k", {0: ("B", None)}, user=ANN, base_version=1)
    store.save_mapping("ds", "k", {0: ("C", None)}, user=BOB, base_version=2)
    with pytest.raises(ConflictError, match="saved version 3"):
        store.undo("ds", "k", user=ANN, base_version=2)  # Ann meant to undo her own version 2
    assert store.current_mapping("ds", "k")["disease"].tolist() == ["C"]


def test_undo_right_after_the_first_save_is_refused_plainly(store: LabelStore):
    with pytest.raises(ValueError, match="no mapping saved for 'ds'/'k'"):
        store.undo("ds", "k", user=ANN, base_version=1)
    store.save_mapping("ds", "k", {0: ("A", None)}, user=ANN, base_version=None)
    assert store.undo_target("ds", "k") is None  # the page disables Undo on this
    with pytest.raises(ValueError, match="no earlier mapping"):
        store.undo("ds", "k", user=ANN, base_version=1)
    assert store.history("ds", "k")["version"].tolist() == [1]


def test_viewers_and_nobody_cannot_write(store: LabelStore):
    store.save_mapping("ds", "k", {0: ("A", None)}, user=ANN, base_version=None)
    store.save_mapping("ds", "k", {0: ("B", None)}, user=ANN, base_version=1)
    for user in (VIEWER, None, User("x", "", "", "none", "default")):
        with pytest.raises(PermissionError, match="needs role 'labeler'"):
            store.save_mapping("ds", "k", {0: ("X", None)}, user=user, base_version=2)
        with pytest.raises(PermissionError):
            store.undo("ds", "k", user=user, base_version=2)
        with pytest.raises(PermissionError):
            store.set_patient_override("ds", "p1", "X", None, user=user, base_version=None)
    assert store.history("ds", "k")["version"].tolist() == [1, 2]
    assert store.override_history("ds").empty


def test_every_write_is_in_the_audit_log_with_id_and_email(store: LabelStore, label_db_url: str):
    store.save_mapping("ds", "k", {0: ("A", None)}, user=ANN, base_version=None)
    store.save_mapping("ds", "k", {0: ("A", None)}, user=ANN, base_version=1)  # no change: no row
    store.save_mapping("ds", "k", {0: ("B", None)}, user=BOB, base_version=1)
    store.undo("ds", "k", user=ANN, base_version=2)
    store.set_patient_override("ds", "p1", "ARDS", "J80", user=BOB, base_version=None)
    store.clear_patient_override("ds", "p1", user=BOB, base_version=1)
    with pytest.raises(ConflictError):
        store.save_mapping("ds", "k", {0: ("late", None)}, user=BOB, base_version=1)
    with AccessStore(label_db_url) as access:
        events = access.events()
    assert events[["email", "action", "target", "detail"]].values.tolist()[::-1] == [
        ["ann@example.org", "mapping.save", "ds/k", "version 1"],
        ["bob@example.org", "mapping.save", "ds/k", "version 2"],
        ["ann@example.org", "mapping.undo", "ds/k", "version 3 restores version 1"],
        ["bob@example.org", "override.save", "ds/p1", "version 1: ARDS J80"],
        ["bob@example.org", "override.clear", "ds/p1", "version 2"],
    ]
    assert set(events["user_id"]) == {ANN.id, BOB.id}


def test_invalid_code_saves_nothing_and_names_every_problem(store: LabelStore):
    store.save_mapping("ds", "k", {0: ("A", "I42.0")}, user=ANN, base_version=None)
    with pytest.raises(ValueError) as info:
        store.save_mapping("ds", "k", {0: ("A", "I42.0"), 1: ("B", "I42.99X"), 2: ("", None), "x": ("C", None)},
                           user=ANN, base_version=1)
    message = str(info.value)
    assert "cluster 1: 'I42.99X' is not an ICD-10-CM code" in message
    assert "cluster 2: needs a disease name or an ICD-10-CM code" in message
    assert "cluster id 'x' must be an integer" in message
    assert store.history("ds", "k")["version"].tolist() == [1]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dataset": "", "clustering_key": "k", "mapping": {0: ("A", None)}}, "dataset=''"),
        ({"dataset": "d", "clustering_key": " ", "mapping": {0: ("A", None)}}, "clustering_key=' '"),
        ({"dataset": "d", "clustering_key": "k", "mapping": {}}, "is empty"),
        ({"dataset": "d", "clustering_key": "k", "mapping": {0: "A"}}, "must be \\(disease, code\\)"),
        ({"dataset": "d", "clustering_key": "k", "mapping": {0: ("A", None)}, "base_version": 0}, "base_version=0"),
        ({"dataset": "d", "clustering_key": "k", "mapping": {0: ("A", None)}, "base_version": "1"}, "base_version='1'"),
    ],
)
def test_save_mapping_bad_arguments(store: LabelStore, kwargs: dict, match: str):
    with pytest.raises(ValueError, match=match):
        store.save_mapping(**{"base_version": None, **kwargs}, user=ANN)


def test_save_accepts_suggested_defaults(store: LabelStore):
    defaults = suggest_default_mapping(dict(enumerate(DEMO_GROUPS)))
    store.save_mapping("demo", "k", defaults, user=ANN, base_version=None)
    current = store.current_mapping("demo", "k")
    assert current["icd10_code"].tolist()[1:] == ["I42.0", "I42.2", "I25.2"]
    assert current.loc[3, "icd10_description"] == "Old myocardial infarction"


def test_patient_overrides_set_replace_clear(store: LabelStore, label_db_url: str):
    assert store.set_patient_override("ds", "p1", "ARDS", "j80", user=ANN, base_version=None, note="seen on CT").version == 1
    assert store.set_patient_override("ds", "p2", "Odd one", None, user=ANN, base_version=None).version == 1
    assert store.set_patient_override("ds", "p1", "COVID-19", "U07.1", user=BOB, base_version=1).version == 2
    assert store.set_patient_override("other", "p1", "X", None, user=BOB, base_version=None).version == 1
    assert store.clear_patient_override("ds", "p2", user=BOB, base_version=1, note="was fine").version == 2
    # The same override again changes nothing.
    assert store.set_patient_override("ds", "p1", "COVID-19", "u071", user=ANN, base_version=2) == SaveResult(2, created=False)

    with LabelStore(label_db_url) as reopened:
        current = reopened.patient_overrides("ds")
    assert current[["patient_id", "disease", "icd10_code", "version", "author"]].values.tolist() == [
        ["p1", "COVID-19", "U07.1", 2, "bob@example.org"]
    ]
    history = store.override_history("ds")
    assert history[["patient_id", "version", "cleared"]].values.tolist() == [
        ["p1", 1, False], ["p1", 2, False], ["p2", 1, False], ["p2", 2, True]
    ]
    assert history.loc[0, "note"] == "seen on CT" and history.loc[0, "author_id"] == ANN.id
    # A cleared patient can be overridden again, from the tombstone's version.
    assert store.override_version("ds", "p2") == 2
    assert store.set_patient_override("ds", "p2", "Back", None, user=ANN, base_version=2).version == 3
    assert sorted(store.patient_overrides("ds")["patient_id"]) == ["p1", "p2"]


def test_patient_override_conflict_keeps_the_other_save(store: LabelStore):
    store.set_patient_override("ds", "p1", "ARDS", "J80", user=ANN, base_version=None)
    with pytest.raises(ConflictError, match="override ds/p1: you edited nothing saved, but ann@example.org saved version 1"):
        store.set_patient_override("ds", "p1", "Pneumonia", "J18.9", user=BOB, base_version=None)
    with pytest.raises(ConflictError):
        store.clear_patient_override("ds", "p1", user=BOB, base_version=None)
    assert store.patient_overrides("ds")["disease"].tolist() == ["ARDS"]


def test_patient_override_errors(store: LabelStore):
    with pytest.raises(ValueError, match="'XYZ' is not an ICD-10-CM code"):
        store.set_patient_override("ds", "p1", "X", "XYZ", user=ANN, base_version=None)
    with pytest.raises(ValueError, match="no override to clear"):
        store.clear_patient_override("ds", "p1", user=ANN, base_version=None)
    with pytest.raises(ValueError, match="patient_id=''"):
        store.set_patient_override("ds", "", "X", None, user=ANN, base_version=None)
    assert store.override_history("ds").empty


def test_in_memory_sqlite_works_across_sessions():
    store = LabelStore("sqlite://")
    store.save_mapping("ds", "k", {0: ("A", None)}, user=ANN, base_version=None)
    assert store.current_mapping("ds", "k")["disease"].tolist() == ["A"]


def test_a_database_from_before_sign_in_is_upgraded_in_place(tmp_path):
    """Tables created by the previous release (no author_id / author_email columns) gain them;
    old rows keep reading, with no id."""
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as old:
        old.executescript("""
            CREATE TABLE label_mapping_versions (id INTEGER PRIMARY KEY, dataset VARCHAR(512), clustering_key VARCHAR(512),
                version INTEGER, action VARCHAR(16), parent_version INTEGER, restored_version INTEGER,
                author VARCHAR(255), note TEXT, created_at DATETIME, UNIQUE (dataset, clustering_key, version));
            CREATE TABLE label_mapping_rows (id INTEGER PRIMARY KEY, version_id INTEGER REFERENCES label_mapping_versions(id),
                cluster INTEGER, disease TEXT, icd10_code VARCHAR(16), icd10_description TEXT, UNIQUE (version_id, cluster));
            INSERT INTO label_mapping_versions VALUES (1, 'ds', 'k', 1, 'save', NULL, NULL, 'typed name', '', '2026-01-01 10:00:00');
            INSERT INTO label_mapping_rows VALUES (1, 1, 0, 'Old', NULL, NULL);
        """)
    with LabelStore(f"sqlite:///{path}") as store:
        assert store.history("ds", "k")[["version", "author"]].values.tolist() == [[1, "typed name"]]
        assert pd.isna(store.history("ds", "k").loc[0, "author_id"])
        assert store.save_mapping("ds", "k", {0: ("New", None)}, user=ANN, base_version=1).version == 2
        assert store.history("ds", "k")["author_id"].tolist()[-1] == ANN.id


def test_a_database_locked_past_every_retry_is_a_clear_busy_error(tmp_path, monkeypatch):
    """Regression: saves that ran out of retries used to raise a raw database error on the
    page. Now the caller gets StoreBusyError (nothing saved) and can say "try again"."""
    import sqlite3

    import core.db
    import core.labels.store
    from core.labels import StoreBusyError

    monkeypatch.setattr(core.db, "SQLITE_BUSY_TIMEOUT_S", 0.05)
    monkeypatch.setattr(core.labels.store, "_WRITE_ATTEMPTS", 3)
    path = tmp_path / "locked.db"
    with LabelStore(f"sqlite:///{path}") as store:
        store.save_mapping("ds", "k", {0: ("A", None)}, user=ANN, base_version=None)
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            with pytest.raises(StoreBusyError, match="nothing was saved"):
                store.save_mapping("ds", "k", {0: ("B", None)}, user=ANN, base_version=1)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert store.history("ds", "k")["version"].tolist() == [1]


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path):
    import sqlite3

    from core.db import SQLITE_BUSY_TIMEOUT_S

    path = tmp_path / "wal.db"
    with LabelStore(f"sqlite:///{path}") as store:
        store.save_mapping("ds", "k", {0: ("A", None)}, user=ANN, base_version=None)
        with store._session() as session:
            connection = session.connection().connection.dbapi_connection
            assert connection.execute("PRAGMA busy_timeout").fetchone() == (SQLITE_BUSY_TIMEOUT_S * 1000,)
    with sqlite3.connect(path) as raw:  # WAL is a property of the file: a new connection sees it
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
