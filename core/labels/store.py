"""Append-only store of cluster -> disease mappings and per-patient overrides (SQLAlchemy 2.x).

Nothing is ever updated or deleted. A *mapping set* is named by ``(dataset, clustering_key)``;
every save adds a version (with its author and UTC time) holding the full mapping, and the
current mapping is the latest version. ``undo`` adds a version too, a copy of the one before,
so history keeps both the mistake and its correction. Undo walks back along the chain of saves
(undoing twice goes back two saves, not back and forth). A patient override is versioned per
``(dataset, patient_id)``; clearing one appends a tombstone row.

Any SQLAlchemy URL works (``core.settings.database_url()`` by default: a SQLite file under the
cache, or PostgreSQL through ``SCANATLAS_DB_URL``). SQLite runs in WAL mode with a busy timeout
so the app and the CLI can write at once; two writers that pick the same version number are
told apart by a unique constraint and the loser retries.
"""

from __future__ import annotations

import math
from collections.abc import Mapping as MappingABC
from datetime import UTC, datetime
from pathlib import Path
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
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
    sessionmaker,
)
from sqlalchemy.pool import StaticPool

from core.labels.defaults import Mapping
from core.labels.icd import validate_icd10
from core.settings import database_url

__all__ = ["LabelStore", "MAPPING_COLUMNS", "OVERRIDE_COLUMNS"]

MAPPING_COLUMNS = ["cluster", "disease", "icd10_code", "icd10_description", "version", "author", "created_at"]
HISTORY_COLUMNS = [*MAPPING_COLUMNS, "action", "restored_version", "note"]
OVERRIDE_COLUMNS = ["patient_id", "disease", "icd10_code", "icd10_description", "version", "author", "note", "created_at"]
_WRITE_ATTEMPTS = 8
_SQLITE_BUSY_TIMEOUT_S = 30


class _Base(DeclarativeBase):
    pass


class _MappingVersion(_Base):
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
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    rows: Mapped[list[_MappingRow]] = relationship(back_populates="mapping_version", order_by="_MappingRow.cluster")


class _MappingRow(_Base):
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


class _PatientOverride(_Base):
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
    icd = None if _is_blank(code) else validate_icd10(str(code))
    if _is_blank(disease):
        if icd is None:
            raise ValueError("needs a disease name or an ICD-10-CM code; both are empty")
        disease = icd.description
    if not isinstance(disease, str):
        raise ValueError(f"disease={disease!r} must be a string")
    return disease.strip(), (icd.code if icd else None), (icd.description if icd else None)


def _make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    database = parsed.database
    if not database or database == ":memory:":
        # One shared connection, or each session would see its own empty in-memory database.
        return create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
    Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": _SQLITE_BUSY_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_S * 1000}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine


def _utc(values: pd.Series) -> pd.Series:
    # SQLite hands back naive datetimes (written as UTC); PostgreSQL hands back aware ones.
    return pd.to_datetime(values, utc=True)


class LabelStore:
    """Versioned cluster mappings and patient overrides in one SQL database.

    Parameters
    ----------
    url : SQLAlchemy URL; ``None`` means ``core.settings.database_url()``. Tables are created
        on first use. A new ``LabelStore`` on the same URL sees everything saved before.
    """

    def __init__(self, url: str | None = None) -> None:
        self.url = url
        self._engine: Engine | None = None
        self._sessions: sessionmaker[Session] | None = None

    # -- plumbing -----------------------------------------------------------------------------
    def _session(self) -> Session:
        if self._sessions is None:
            self._engine = _make_engine(self.url or database_url())
            _Base.metadata.create_all(self._engine)
            self._sessions = sessionmaker(self._engine, expire_on_commit=False)
        return self._sessions()

    def close(self) -> None:
        """Release pooled connections (the data stays on disk)."""
        if self._engine is not None:
            self._engine.dispose()
        self._engine = None
        self._sessions = None

    def __enter__(self) -> LabelStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, work: Any) -> int:
        """Run ``work(session) -> version`` in one transaction, retrying when a concurrent writer
        took the same version number first."""
        for attempt in range(_WRITE_ATTEMPTS):
            try:
                with self._session() as session, session.begin():
                    return work(session)
            except IntegrityError:
                if attempt == _WRITE_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

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
    def _add_version(session: Session, previous: _MappingVersion | None, rows: list[tuple[int, str, str | None, str | None]],
                     **fields: Any) -> int:
        version = _MappingVersion(version=(previous.version + 1) if previous else 1, created_at=_now(), **fields)
        session.add(version)
        session.flush()
        session.add_all(
            _MappingRow(version_id=version.id, cluster=c, disease=d, icd10_code=code, icd10_description=desc)
            for c, d, code, desc in rows
        )
        return version.version

    # -- cluster mappings ---------------------------------------------------------------------
    def save_mapping(self, dataset: str, clustering_key: str,
                     mapping: MappingABC[int, tuple[str, str | None] | Mapping], *, author: str,
                     note: str = "") -> int:
        """Save the full mapping for one clustering as a new version; return its number (1, 2, ...).

        Parameters
        ----------
        mapping : dict cluster id -> ``(disease, code)`` or ``Mapping``. ``code`` may be None or
            "" for no code; otherwise it is normalised ("i420" -> "I42.0"). An empty disease
            with a code takes the code's description.
        author : who made the change (shown in history).

        Raises ``ValueError`` (and saves nothing) if the mapping is empty, a cluster id is not
        an integer, or any code is not an ICD-10-CM code; the message lists every bad cluster.
        """
        dataset = _check_name("dataset", dataset)
        clustering_key = _check_name("clustering_key", clustering_key)
        author = _check_name("author", author)
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

        def work(session: Session) -> int:
            previous = self._latest(session, dataset, clustering_key)
            return self._add_version(
                session, previous, rows, dataset=dataset, clustering_key=clustering_key, action="save",
                parent_version=previous.version if previous else None, restored_version=None,
                author=author, note=note,
            )

        return self._write(work)

    def undo(self, dataset: str, clustering_key: str, *, author: str, note: str = "") -> int:
        """Append a version that restores the mapping before the current one; return its number.

        Repeated undos keep walking back through earlier saves.

        Raises ``ValueError`` if nothing was saved for this clustering or there is no earlier
        mapping to go back to.
        """
        dataset = _check_name("dataset", dataset)
        clustering_key = _check_name("clustering_key", clustering_key)
        author = _check_name("author", author)

        def work(session: Session) -> int:
            current = self._latest(session, dataset, clustering_key)
            if current is None:
                raise ValueError(f"nothing to undo: no mapping saved for {dataset!r}/{clustering_key!r}")
            if current.parent_version is None:
                raise ValueError(
                    f"nothing to undo for {dataset!r}/{clustering_key!r}: version {current.version} "
                    "has no earlier mapping"
                )
            target = self._version(session, dataset, clustering_key, current.parent_version)
            assert target is not None  # versions are never deleted
            rows = [(r.cluster, r.disease, r.icd10_code, r.icd10_description) for r in target.rows]
            return self._add_version(
                session, current, rows, dataset=dataset, clustering_key=clustering_key, action="undo",
                parent_version=target.parent_version, restored_version=target.version,
                author=author, note=note,
            )

        return self._write(work)

    def _mapping_frame(self, versions: list[_MappingVersion], columns: list[str]) -> pd.DataFrame:
        records = [
            {
                "cluster": r.cluster, "disease": r.disease, "icd10_code": r.icd10_code,
                "icd10_description": r.icd10_description, "version": v.version, "author": v.author,
                "created_at": v.created_at, "action": v.action, "restored_version": v.restored_version,
                "note": v.note,
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
        ``current_mapping`` plus ``action`` ("save" | "undo"), ``restored_version`` (for an undo,
        the version it copied) and ``note``."""
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
    def _add_override(self, dataset: str, patient_id: Any, *, author: str, note: str,
                      cleared: bool, disease: str | None = None, code: str | None = None,
                      description: str | None = None) -> int:
        dataset = _check_name("dataset", dataset)
        author = _check_name("author", author)
        if _is_blank(patient_id):
            raise ValueError(f"patient_id={patient_id!r} must be non-empty")
        patient = str(patient_id)

        def work(session: Session) -> int:
            latest = session.scalars(
                select(_PatientOverride)
                .where(_PatientOverride.dataset == dataset, _PatientOverride.patient_id == patient)
                .order_by(_PatientOverride.version.desc())
                .limit(1)
            ).first()
            if cleared and (latest is None or latest.cleared):
                raise ValueError(f"patient {patient!r} in {dataset!r} has no override to clear")
            row = _PatientOverride(
                dataset=dataset, patient_id=patient, version=(latest.version + 1) if latest else 1,
                cleared=cleared, disease=disease, icd10_code=code, icd10_description=description,
                author=author, note=note or "", created_at=_now(),
            )
            session.add(row)
            session.flush()
            return row.version

        return self._write(work)

    def set_patient_override(self, dataset: str, patient_id: str, disease: str, code: str | None, *,
                             author: str, note: str = "") -> int:
        """Label one patient by hand, whatever their cluster says; return the override version.

        ``code`` may be None/"" (no code); otherwise it is validated and normalised. An empty
        ``disease`` with a code takes the code's description.

        Raises ``ValueError`` for an invalid code, empty disease and code, or empty author.
        """
        disease, code, description = _resolve(disease, code)
        return self._add_override(dataset, patient_id, author=author, note=note, cleared=False,
                                  disease=disease, code=code, description=description)

    def clear_patient_override(self, dataset: str, patient_id: str, *, author: str, note: str = "") -> int:
        """Remove a patient's override (by appending a tombstone); return its version.

        Raises ``ValueError`` if the patient has no active override.
        """
        return self._add_override(dataset, patient_id, author=author, note=note, cleared=True)

    def _override_rows(self, dataset: str, patient_id: str | None = None) -> list[_PatientOverride]:
        with self._session() as session:
            query = select(_PatientOverride).where(_PatientOverride.dataset == dataset)
            if patient_id is not None:
                query = query.where(_PatientOverride.patient_id == str(patient_id))
            return list(session.scalars(query.order_by(_PatientOverride.patient_id, _PatientOverride.version)))

    @staticmethod
    def _override_frame(rows: list[_PatientOverride], columns: list[str]) -> pd.DataFrame:
        records = [
            {c: getattr(r, c) for c in (*OVERRIDE_COLUMNS, "cleared")} for r in rows
        ]
        frame = pd.DataFrame.from_records(records, columns=[*OVERRIDE_COLUMNS, "cleared"])
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
        """Every override row (sets and clears), by patient then version, with a ``cleared``
        column added to the ``patient_overrides`` columns."""
        return self._override_frame(self._override_rows(dataset, patient_id), [*OVERRIDE_COLUMNS, "cleared"])
