"""Append-only store of cluster -> disease mappings and per-patient overrides (SQLAlchemy 2.x).

Nothing is ever updated or deleted. A *mapping set* is named by ``(dataset, clustering_key)``;
every save adds a version (with its author's stable id and e-mail and the UTC time) holding the
full mapping, and the current mapping is the latest version. ``undo`` adds a version too, a
copy of the one before, so history keeps both the mistake and its correction. Undo walks back
along the chain of saves (undoing twice goes back two saves, not back and forth). A patient
override is versioned per ``(dataset, patient_id)``; clearing one appends a tombstone row.

No last writer wins: every write carries the version it was edited from (``base_version``), and
if someone saved in between it is refused with ``ConflictError``, which carries the version now
current so that the page can show both side by side. A save that changes nothing adds no
version. Every write needs a ``core.auth.User`` allowed to label (``PermissionError``
otherwise) and adds an audit row in the same transaction.

Any SQLAlchemy URL works (see ``core.db``). Two writers that pick the same version number are
told apart by a unique constraint: the loser re-reads, finds the version it edited from is no
longer current, and gets ``ConflictError``. A database still locked after the retries raises
``StoreBusyError``; neither ever leaves a half-written version.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from collections.abc import Mapping as MappingABC
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from sqlalchemy import (
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    select,
)
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from core.auth import User, record_event, require
from core.db import Base, DatabaseClient
from core.labels.defaults import Mapping
from core.labels.icd import validate_icd10

__all__ = ["ConflictError", "LabelStore", "MAPPING_COLUMNS", "OVERRIDE_COLUMNS", "SaveResult", "StoreBusyError"]

MAPPING_COLUMNS = ["cluster", "disease", "icd10_code", "icd10_description", "version", "author", "created_at"]
HISTORY_COLUMNS = [*MAPPING_COLUMNS, "author_id", "action", "restored_version", "note"]
OVERRIDE_COLUMNS = ["patient_id", "disease", "icd10_code", "icd10_description", "version", "author", "note", "created_at"]
_WRITE_ATTEMPTS = 8


class ConflictError(ValueError):
    """Someone saved after the version this edit started from; nothing was saved.

    Attributes: ``target`` (what was being saved), ``base_version`` (the version the edit
    started from, ``None`` for "nothing saved yet"), ``current_version`` and ``current_author``.
    Read the current content with ``LabelStore.current_mapping`` / ``patient_overrides``.
    """

    def __init__(self, target: str, base_version: int | None, current_version: int | None,
                 current_author: str) -> None:
        self.target, self.base_version = target, base_version
        self.current_version, self.current_author = current_version, current_author
        started = "nothing saved" if base_version is None else f"version {base_version}"
        super().__init__(
            f"{target}: you edited {started}, but {current_author} saved version {current_version} "
            "since; nothing was saved. Merge your edits into the current version and save again."
        )


class StoreBusyError(RuntimeError):
    """The database stayed locked through every retry; nothing was saved."""


@dataclass(frozen=True)
class SaveResult:
    """``version`` now current; ``created`` is False when the save changed nothing (no new
    version); ``restored_version`` is the version an undo copied."""

    version: int
    created: bool = True
    restored_version: int | None = None


class _MappingVersion(Base):
    __tablename__ = "label_mapping_versions"
    __table_args__ = (UniqueConstraint("dataset", "clustering_key", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset: Mapped[str] = mapped_column(String(512), index=True)
    clustering_key: Mapped[str] = mapped_column(String(512))
    version: Mapped[int] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(16))  # "save" | "undo"
    # The version this one stands on in the undo chain, and for an undo the version it copies.
    parent_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    restored_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    author: Mapped[str] = mapped_column(String(255))
    # The signed-in user's stable id and e-mail (NULL in rows written before sign-in existed).
    author_id: Mapped[str | None] = mapped_column(String(512), nullable=True)
    author_email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    rows: Mapped[list[_MappingRow]] = relationship(back_populates="mapping_version", order_by="_MappingRow.cluster")


class _MappingRow(Base):
    __tablename__ = "label_mapping_rows"
    __table_args__ = (UniqueConstraint("version_id", "cluster"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("label_mapping_versions.id"), index=True)
    cluster: Mapped[int] = mapped_column(Integer)
    disease: Mapped[str] = mapped_column(Text)
    # The description is stored with the code so old versions read as they did, even after the
    # code set changes.
    icd10_code: Mapped[str | None] = mapped_column(String(16), nullable=True)
    icd10_description: Mapped[str | None] = mapped_column(Text, nullable=True)
    mapping_version: Mapped[_MappingVersion] = relationship(back_populates="rows")


class _PatientOverride(Base):
    __tablename__ = "label_patient_overrides"
    __table_args__ = (UniqueConstraint("dataset", "patient_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset: Mapped[str] = mapped_column(String(512), index=True)
    patient_id: Mapped[str] = mapped_column(String(512))
    version: Mapped[int] = mapped_column(Integer)
    cleared: Mapped[bool] = mapped_column(Boolean, default=False)
    disease: Mapped[str | None] = mapped_column(Text, nullable=True)
    icd10_code: Mapped[str | None] = mapped_column(String(16), nullable=True)
    icd10_description: Mapped[str | None] = mapped_column(Text, nullable=True)
    author: Mapped[str] = mapped_column(String(255))
    author_id: Mapped[str | None] = mapped_column(String(512), nullable=True)
    author_email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


def _now() -> datetime:
    return datetime.now(UTC)


def _is_blank(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def _check_name(what: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what}={value!r} must be a non-empty string")
    return value.strip()


def _resolve(disease: Any, code: Any) -> tuple[str, str | None, str | None]:
    """(disease, normalised code or None, code description or None); ValueError if invalid."""
    icd = None if _is_blank(code) else validate_icd10(
        str(code), disease=disease if isinstance(disease, str) else None)
    if _is_blank(disease):
        if icd is None:
            raise ValueError("needs a disease name or an ICD-10-CM code; both are empty")
        disease = icd.description
    if not isinstance(disease, str):
        raise ValueError(f"disease={disease!r} must be a string")
    return disease.strip(), (icd.code if icd else None), (icd.description if icd else None)


def _utc(values: pd.Series) -> pd.Series:
    # SQLite hands back naive datetimes (written as UTC); PostgreSQL hands back aware ones.
    return pd.to_datetime(values, utc=True)



def _check_base(base_version: Any) -> int | None:
    if base_version is None:
        return None
    if isinstance(base_version, bool) or not isinstance(base_version, int) or base_version < 1:
        raise ValueError(f"base_version={base_version!r} must be None (nothing saved yet) or a version >= 1")
    return base_version


def _author_fields(user: User) -> dict[str, str]:
    return {"author": user.label, "author_id": user.id, "author_email": user.email}


class LabelStore(DatabaseClient):
    """Versioned cluster mappings and patient overrides in one SQL database.

    Parameters
    ----------
    url : SQLAlchemy URL; ``None`` means ``core.settings.database_url()``. Tables are created
        on first use. A new ``LabelStore`` on the same URL sees everything saved before.
    """

    # -- plumbing -----------------------------------------------------------------------------
    def _write(self, work: Callable[[Session], SaveResult]) -> SaveResult:
        """Run ``work(session)`` in one transaction. A unique-constraint clash (a concurrent
        writer took the version number) is retried: ``work`` then re-reads and reports the
        conflict. A lock held past the busy timeout is retried after a short random pause."""
        for attempt in range(_WRITE_ATTEMPTS):
            try:
                with self._session() as session, session.begin():
                    return work(session)
            except IntegrityError:
                continue
            except OperationalError as error:
                if "locked" not in str(error).lower() and "deadlock" not in str(error).lower():
                    raise
                time.sleep(random.uniform(0.05, 0.2) * (attempt + 1))
        raise StoreBusyError(
            f"the label database stayed busy through {_WRITE_ATTEMPTS} attempts; nothing was saved, try again"
        )

    @staticmethod
    def _latest(session: Session, dataset: str, clustering_key: str) -> _MappingVersion | None:
        return session.scalars(
            select(_MappingVersion)
            .where(_MappingVersion.dataset == dataset, _MappingVersion.clustering_key == clustering_key)
            .order_by(_MappingVersion.version.desc())
            .limit(1)
        ).first()

    @staticmethod
    def _version(session: Session, dataset: str, clustering_key: str, version: int) -> _MappingVersion | None:
        return session.scalars(
            select(_MappingVersion).where(
                _MappingVersion.dataset == dataset,
                _MappingVersion.clustering_key == clustering_key,
                _MappingVersion.version == version,
            )
        ).first()

    @staticmethod
    def _check_current(target: str, latest: Any, base_version: int | None) -> None:
        current = latest.version if latest is not None else None
        if current != base_version:
            raise ConflictError(target, base_version, current, latest.author if latest is not None else "nobody")

    @staticmethod
    def _add_version(session: Session, previous: _MappingVersion | None, rows: list[tuple[int, str, str | None, str | None]],
                     user: User, **fields: Any) -> int:
        version = _MappingVersion(version=(previous.version + 1) if previous else 1, created_at=_now(),
                                  **_author_fields(user), **fields)
        session.add(version)
        session.flush()
        session.add_all(
            _MappingRow(version_id=version.id, cluster=c, disease=d, icd10_code=code, icd10_description=desc)
            for c, d, code, desc in rows
        )
        return version.version

    # -- cluster mappings ---------------------------------------------------------------------
    def save_mapping(self, dataset: str, clustering_key: str,
                     mapping: MappingABC[int, tuple[str, str | None] | Mapping], *, user: User,
                     base_version: int | None, note: str = "") -> SaveResult:
        """Save the full mapping for one clustering as a new version.

        Parameters
        ----------
        mapping : dict cluster id -> ``(disease, code)`` or ``Mapping``. ``code`` may be None or
            "" for no code; otherwise it is normalised ("i420" -> "I42.0"). An empty disease
            with a code takes the code's description.
        user : who saves; needs the ``label`` permission. Their id and e-mail are recorded.
        base_version : the version the edit started from (``None``: nothing was saved yet).

        Returns the ``SaveResult``; when the mapping equals the current one no version is added
        (``created=False``). Raises ``PermissionError`` if ``user`` may not label,
        ``ConflictError`` if another version was saved after ``base_version``, and
        ``ValueError`` (saving nothing) if the mapping is empty, a cluster id is not an integer,
        or any code is not an ICD-10-CM code; the message lists every bad cluster.
        """
        require(user, "label")
        dataset = _check_name("dataset", dataset)
        clustering_key = _check_name("clustering_key", clustering_key)
        base_version = _check_base(base_version)
        if not mapping:
            raise ValueError(f"mapping for {dataset!r}/{clustering_key!r} is empty; give at least one cluster")
        rows, errors = [], []
        for cluster, value in mapping.items():
            try:
                cluster_id = int(cluster)
                if cluster_id != cluster:
                    raise ValueError
            except (TypeError, ValueError):
                errors.append(f"cluster id {cluster!r} must be an integer")
                continue
            try:
                if isinstance(value, Mapping):
                    disease, code = value.disease, value.code
                else:
                    disease, code = value
            except (TypeError, ValueError):
                errors.append(f"cluster {cluster_id}: value {value!r} must be (disease, code) or Mapping")
                continue
            try:
                rows.append((cluster_id, *_resolve(disease, code)))
            except ValueError as err:
                errors.append(f"cluster {cluster_id}: {err}")
        if errors:
            raise ValueError("mapping not saved: " + "; ".join(errors))
        rows.sort()
        target = f"mapping {dataset}/{clustering_key}"

        def work(session: Session) -> SaveResult:
            previous = self._latest(session, dataset, clustering_key)
            self._check_current(target, previous, base_version)
            if previous is not None and [(r.cluster, r.disease, r.icd10_code, r.icd10_description)
                                         for r in previous.rows] == rows:
                return SaveResult(previous.version, created=False)
            version = self._add_version(
                session, previous, rows, user, dataset=dataset, clustering_key=clustering_key, action="save",
                parent_version=previous.version if previous else None, restored_version=None, note=note,
            )
            record_event(session, user, "mapping.save", f"{dataset}/{clustering_key}", f"version {version}")
            return SaveResult(version)

        return self._write(work)

    def current_version(self, dataset: str, clustering_key: str) -> int | None:
        """The current mapping version, or ``None`` when nothing was saved: the ``base_version``
        to pass when saving an edit of what is shown now."""
        with self._session() as session:
            latest = self._latest(session, dataset, clustering_key)
            return latest.version if latest is not None else None

    def undo_target(self, dataset: str, clustering_key: str) -> int | None:
        """The version an ``undo`` now would restore, or ``None`` when there is nothing to undo."""
        with self._session() as session:
            latest = self._latest(session, dataset, clustering_key)
            return latest.parent_version if latest is not None else None

    def undo(self, dataset: str, clustering_key: str, *, user: User, base_version: int,
             note: str = "") -> SaveResult:
        """Append a version that restores the mapping before ``base_version`` (the current one).

        Repeated undos keep walking back through earlier saves. The result's
        ``restored_version`` is the version copied.

        Raises ``PermissionError`` if ``user`` may not label, ``ConflictError`` if a version
        was saved after ``base_version``, and ``ValueError`` if nothing was saved for this
        clustering or there is no earlier mapping to go back to.
        """
        require(user, "label")
        dataset = _check_name("dataset", dataset)
        clustering_key = _check_name("clustering_key", clustering_key)
        base_version = _check_base(base_version)
        target_name = f"mapping {dataset}/{clustering_key}"

        def work(session: Session) -> SaveResult:
            current = self._latest(session, dataset, clustering_key)
            if current is None:
                raise ValueError(f"nothing to undo: no mapping saved for {dataset!r}/{clustering_key!r}")
            self._check_current(target_name, current, base_version)
            if current.parent_version is None:
                raise ValueError(
                    f"nothing to undo for {dataset!r}/{clustering_key!r}: version {current.version} "
                    "has no earlier mapping"
                )
            target = self._version(session, dataset, clustering_key, current.parent_version)
            assert target is not None  # versions are never deleted
            rows = [(r.cluster, r.disease, r.icd10_code, r.icd10_description) for r in target.rows]
            version = self._add_version(
                session, current, rows, user, dataset=dataset, clustering_key=clustering_key, action="undo",
                parent_version=target.parent_version, restored_version=target.version, note=note,
            )
            record_event(session, user, "mapping.undo", f"{dataset}/{clustering_key}",
                         f"version {version} restores version {target.version}")
            return SaveResult(version, restored_version=target.version)

        return self._write(work)

    def _mapping_frame(self, versions: list[_MappingVersion], columns: list[str]) -> pd.DataFrame:
        records = [
            {
                "cluster": r.cluster, "disease": r.disease, "icd10_code": r.icd10_code,
                "icd10_description": r.icd10_description, "version": v.version, "author": v.author,
                "author_id": v.author_id, "created_at": v.created_at, "action": v.action,
                "restored_version": v.restored_version, "note": v.note,
            }
            for v in versions for r in v.rows
        ]
        frame = pd.DataFrame.from_records(records, columns=HISTORY_COLUMNS)
        frame = frame.astype({"cluster": "int64", "version": "int64", "restored_version": "Int64"})
        frame["created_at"] = _utc(frame["created_at"])
        return frame[columns].reset_index(drop=True)

    def current_mapping(self, dataset: str, clustering_key: str) -> pd.DataFrame:
        """The latest mapping: one row per cluster, sorted by cluster, with columns ``cluster,
        disease, icd10_code, icd10_description, version, author, created_at`` (UTC). Empty
        (same columns) when nothing was saved."""
        with self._session() as session:
            latest = self._latest(session, dataset, clustering_key)
            return self._mapping_frame([latest] if latest else [], MAPPING_COLUMNS)

    def mapping_at(self, dataset: str, clustering_key: str, version: int) -> pd.DataFrame:
        """The mapping as saved in ``version`` (columns as ``current_mapping``).

        Raises ``ValueError`` if that version does not exist.
        """
        with self._session() as session:
            found = self._version(session, dataset, clustering_key, int(version))
            if found is None:
                raise ValueError(f"version={version} does not exist for {dataset!r}/{clustering_key!r}")
            return self._mapping_frame([found], MAPPING_COLUMNS)

    def history(self, dataset: str, clustering_key: str) -> pd.DataFrame:
        """Every version, oldest first: one row per (version, cluster), with the columns of
        ``current_mapping`` plus ``author_id`` (the saver's stable id), ``action`` ("save" |
        "undo"), ``restored_version`` (for an undo, the version it copied) and ``note``."""
        with self._session() as session:
            versions = session.scalars(
                select(_MappingVersion)
                .where(_MappingVersion.dataset == dataset, _MappingVersion.clustering_key == clustering_key)
                .order_by(_MappingVersion.version)
            ).all()
            return self._mapping_frame(list(versions), HISTORY_COLUMNS)

    def mapping_sets(self, dataset: str | None = None) -> pd.DataFrame:
        """Saved mapping sets: ``dataset, clustering_key, version`` (latest), ``updated_at``."""
        with self._session() as session:
            query = select(
                _MappingVersion.dataset, _MappingVersion.clustering_key,
                func.max(_MappingVersion.version), func.max(_MappingVersion.created_at),
            ).group_by(_MappingVersion.dataset, _MappingVersion.clustering_key)
            if dataset is not None:
                query = query.where(_MappingVersion.dataset == dataset)
            rows = session.execute(query.order_by(_MappingVersion.dataset, _MappingVersion.clustering_key)).all()
        frame = pd.DataFrame.from_records(rows, columns=["dataset", "clustering_key", "version", "updated_at"])
        frame["updated_at"] = _utc(frame["updated_at"])
        return frame.astype({"version": "int64"})

    # -- patient overrides --------------------------------------------------------------------
    @staticmethod
    def _latest_override(session: Session, dataset: str, patient: str) -> _PatientOverride | None:
        return session.scalars(
            select(_PatientOverride)
            .where(_PatientOverride.dataset == dataset, _PatientOverride.patient_id == patient)
            .order_by(_PatientOverride.version.desc())
            .limit(1)
        ).first()

    def override_version(self, dataset: str, patient_id: str) -> int | None:
        """The latest override version for a patient (a clear counts), or ``None`` if never set:
        the ``base_version`` to pass when editing that patient."""
        with self._session() as session:
            latest = self._latest_override(session, dataset, str(patient_id))
            return latest.version if latest is not None else None

    def _add_override(self, dataset: str, patient_id: Any, *, user: User, base_version: int | None,
                      note: str, cleared: bool, disease: str | None = None, code: str | None = None,
                      description: str | None = None) -> SaveResult:
        require(user, "label")
        dataset = _check_name("dataset", dataset)
        base_version = _check_base(base_version)
        if _is_blank(patient_id):
            raise ValueError(f"patient_id={patient_id!r} must be non-empty")
        patient = str(patient_id)
        target = f"override {dataset}/{patient}"

        def work(session: Session) -> SaveResult:
            latest = self._latest_override(session, dataset, patient)
            self._check_current(target, latest, base_version)
            if cleared and (latest is None or latest.cleared):
                raise ValueError(f"patient {patient!r} in {dataset!r} has no override to clear")
            if (not cleared and latest is not None and not latest.cleared
                    and (latest.disease, latest.icd10_code) == (disease, code)):
                return SaveResult(latest.version, created=False)
            row = _PatientOverride(
                dataset=dataset, patient_id=patient, version=(latest.version + 1) if latest else 1,
                cleared=cleared, disease=disease, icd10_code=code, icd10_description=description,
                note=note or "", created_at=_now(), **_author_fields(user),
            )
            session.add(row)
            session.flush()
            record_event(session, user, "override.clear" if cleared else "override.save",
                         f"{dataset}/{patient}", f"version {row.version}" + ("" if cleared else f": {disease} {code or ''}".rstrip()))
            return SaveResult(row.version)

        return self._write(work)

    def set_patient_override(self, dataset: str, patient_id: str, disease: str, code: str | None, *,
                             user: User, base_version: int | None, note: str = "") -> SaveResult:
        """Label one patient by hand, whatever their cluster says.

        ``code`` may be None/"" (no code); otherwise it is validated and normalised. An empty
        ``disease`` with a code takes the code's description. ``base_version`` is the
        patient's override version the edit started from (``override_version``; ``None`` if
        never set). Setting the override it already has adds no version.

        Raises ``PermissionError``, ``ConflictError``, and ``ValueError`` for an invalid code or
        empty disease and code.
        """
        require(user, "label")
        disease, code, description = _resolve(disease, code)
        return self._add_override(dataset, patient_id, user=user, base_version=base_version, note=note,
                                  cleared=False, disease=disease, code=code, description=description)

    def clear_patient_override(self, dataset: str, patient_id: str, *, user: User, base_version: int | None,
                               note: str = "") -> SaveResult:
        """Remove a patient's override (by appending a tombstone).

        Raises ``PermissionError``, ``ConflictError``, and ``ValueError`` if the patient has no
        active override.
        """
        return self._add_override(dataset, patient_id, user=user, base_version=base_version, note=note, cleared=True)

    def _override_rows(self, dataset: str, patient_id: str | None = None) -> list[_PatientOverride]:
        with self._session() as session:
            query = select(_PatientOverride).where(_PatientOverride.dataset == dataset)
            if patient_id is not None:
                query = query.where(_PatientOverride.patient_id == str(patient_id))
            return list(session.scalars(query.order_by(_PatientOverride.patient_id, _PatientOverride.version)))

    @staticmethod
    def _override_frame(rows: list[_PatientOverride], columns: list[str]) -> pd.DataFrame:
        every = [*OVERRIDE_COLUMNS, "author_id", "cleared"]
        records = [{c: getattr(r, c) for c in every} for r in rows]
        frame = pd.DataFrame.from_records(records, columns=every)
        frame = frame.astype({"version": "int64", "cleared": "bool"})
        frame["created_at"] = _utc(frame["created_at"])
        return frame[columns].reset_index(drop=True)

    def patient_overrides(self, dataset: str) -> pd.DataFrame:
        """Active overrides, one row per patient (sorted by patient_id): ``patient_id, disease,
        icd10_code, icd10_description, version, author, note, created_at``. Cleared ones are
        left out; ``override_history`` has them."""
        latest: dict[str, _PatientOverride] = {}
        for row in self._override_rows(dataset):
            latest[row.patient_id] = row  # rows come in version order, so the last one wins
        active = [row for row in latest.values() if not row.cleared]
        return self._override_frame(active, OVERRIDE_COLUMNS)

    def override_history(self, dataset: str, patient_id: str | None = None) -> pd.DataFrame:
        """Every override row (sets and clears), by patient then version, with ``author_id``
        and ``cleared`` columns added to the ``patient_overrides`` columns."""
        return self._override_frame(self._override_rows(dataset, patient_id),
                                    [*OVERRIDE_COLUMNS, "author_id", "cleared"])
