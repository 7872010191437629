"""Exclusions after a data-quality audit (:mod:`core.audit`): what an analyst decided about a
finding, "excluded" or "not a problem" (or back to "open"), versioned like label edits.

Append-only (``core.labels.store`` style): every decision on a finding adds a version with its
author's stable id and e-mail and the UTC time; the current decision is the latest version.
Every write carries the version it was made from (``base_version``), so two analysts deciding
the same finding at once cannot overwrite each other (``ConflictError``); it needs a user
allowed to label (``core.auth.require(user, "label")``) and adds an audit-log row in the same
transaction. SQLite and PostgreSQL through the same :class:`core.db.DatabaseClient`.

A finding is named by a *finding id* (:func:`finding_id`: kind + the image ids it concerns,
so the same duplicate set or image problem keeps its id across audit runs) and lists the image
ids it excludes. :func:`excluded_ids` is what every page's cohort filter reads: the image ids of
every finding whose current decision is "excluded".
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

import pandas as pd
from sqlalchemy import DateTime, Integer, String, Text, UniqueConstraint, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Mapped, Session, mapped_column

from core.auth import User, record_event, require
from core.db import Base, DatabaseClient
from core.labels.store import ConflictError, SaveResult, StoreBusyError

__all__ = ["DECISIONS", "DECISION_COLUMNS", "ConflictError", "DecisionStore", "SaveResult", "StoreBusyError",
           "excluded_ids", "excluded_per_patient", "finding_id"]

DECISIONS = ("excluded", "not_a_problem", "open")
DECISION_COLUMNS = ["finding_id", "decision", "image_ids", "version", "author", "note", "created_at"]
FINDING_KINDS = ("duplicate", "label", "image", "outlier")
_WRITE_ATTEMPTS = 8
_MAX_IMAGES = 10_000


class _Decision(Base):
    __tablename__ = "audit_decisions"
    __table_args__ = (UniqueConstraint("dataset", "finding_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset: Mapped[str] = mapped_column(String(512), index=True)
    finding_id: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer)
    decision: Mapped[str] = mapped_column(String(32))
    image_ids: Mapped[str] = mapped_column(Text)  # JSON list of image ids
    author: Mapped[str] = mapped_column(String(255))
    author_id: Mapped[str | None] = mapped_column(String(512), nullable=True)
    author_email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


def finding_id(kind: str, image_ids: Iterable[str], detail: str = "") -> str:
    """A stable id for a finding: ``f"{kind}-{sha256(detail + sorted image ids)[:16]}"``.

    kind : one of ``FINDING_KINDS``; detail : e.g. the image issue ("blurry"), so that two
    problems of one image are decided separately. Raises ValueError for an unknown kind or no
    image ids."""
    if kind not in FINDING_KINDS:
        raise ValueError(f"finding kind {kind!r} must be one of {list(FINDING_KINDS)}")
    ids = sorted({str(i) for i in image_ids})
    if not ids:
        raise ValueError("a finding needs at least one image id")
    digest = hashlib.sha256(json.dumps([detail, ids]).encode()).hexdigest()[:16]
    return f"{kind}-{digest}"


def _check_text(what: str, value: object, limit: int) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise ValueError(f"{what}={value!r} must be a non-empty string of at most {limit} characters")
    return value.strip()


def _check_base(base_version: object) -> int | None:
    if base_version is None:
        return None
    if isinstance(base_version, bool) or not isinstance(base_version, int) or base_version < 1:
        raise ValueError(f"base_version={base_version!r} must be None (never decided) or a version >= 1")
    return base_version


class DecisionStore(DatabaseClient):
    """Versioned decisions on audit findings in the label database (``url`` ``None``:
    ``core.settings.database_url()``)."""

    def _write(self, work: Callable[[Session], SaveResult]) -> SaveResult:
        for attempt in range(_WRITE_ATTEMPTS):
            try:
                with self._session() as session, session.begin():
                    return work(session)
            except IntegrityError:
                continue  # a concurrent writer took the version number: re-read, report the conflict
            except OperationalError as error:
                if "locked" not in str(error).lower() and "deadlock" not in str(error).lower():
                    raise
                time.sleep(random.uniform(0.05, 0.2) * (attempt + 1))
        raise StoreBusyError(f"the database stayed busy through {_WRITE_ATTEMPTS} attempts; nothing was saved, try again")

    @staticmethod
    def _latest(session: Session, dataset: str, finding: str) -> _Decision | None:
        return session.scalars(
            select(_Decision).where(_Decision.dataset == dataset, _Decision.finding_id == finding)
            .order_by(_Decision.version.desc()).limit(1)
        ).first()

    def version(self, dataset: str, finding: str) -> int | None:
        """The finding's current version (``None`` if never decided): the ``base_version`` to
        pass when deciding it now."""
        with self._session() as session:
            latest = self._latest(session, dataset, finding)
            return latest.version if latest is not None else None

    def decide(self, dataset: str, finding: str, decision: str, image_ids: Iterable[str], *, user: User,
               base_version: int | None, note: str = "") -> SaveResult:
        """Record ``decision`` ("excluded", "not_a_problem" or "open") on ``finding`` for
        ``image_ids`` as a new version.

        Deciding what is already current adds no version (``created=False``). Raises
        ``PermissionError`` if ``user`` may not label, ``ConflictError`` if someone decided
        after ``base_version``, ``ValueError`` for a bad dataset, finding id, decision or image
        list, and ``StoreBusyError`` if the database stays locked.
        """
        require(user, "label")
        dataset = _check_text("dataset", dataset, 512)
        finding = _check_text("finding", finding, 128)
        if decision not in DECISIONS:
            raise ValueError(f"decision={decision!r} must be one of {list(DECISIONS)}")
        ids = sorted({str(i) for i in image_ids})
        if not ids or len(ids) > _MAX_IMAGES:
            raise ValueError(f"a decision needs 1..{_MAX_IMAGES} image ids; got {len(ids)}")
        base_version = _check_base(base_version)
        payload = json.dumps(ids)
        target = f"finding {dataset}/{finding}"

        def work(session: Session) -> SaveResult:
            latest = self._latest(session, dataset, finding)
            current = latest.version if latest is not None else None
            if current != base_version:
                raise ConflictError(target, base_version, current, latest.author if latest is not None else "nobody")
            if latest is not None and (latest.decision, latest.image_ids) == (decision, payload):
                return SaveResult(latest.version, created=False)
            if latest is None and decision == "open":
                raise ValueError(f"{target} was never decided; nothing to reopen")
            row = _Decision(dataset=dataset, finding_id=finding, version=(current or 0) + 1, decision=decision,
                            image_ids=payload, author=user.label, author_id=user.id, author_email=user.email,
                            note=note or "", created_at=datetime.now(UTC))
            session.add(row)
            session.flush()
            record_event(session, user, f"audit.{decision}", f"{dataset}/{finding}",
                         f"version {row.version}: {len(ids)} image(s)")
            return SaveResult(row.version)

        return self._write(work)

    def _rows(self, dataset: str, finding: str | None = None) -> list[_Decision]:
        with self._session() as session:
            query = select(_Decision).where(_Decision.dataset == dataset)
            if finding is not None:
                query = query.where(_Decision.finding_id == finding)
            return list(session.scalars(query.order_by(_Decision.finding_id, _Decision.version)))

    @staticmethod
    def _frame(rows: list[_Decision]) -> pd.DataFrame:
        records = [{"finding_id": r.finding_id, "decision": r.decision, "image_ids": json.loads(r.image_ids),
                    "version": r.version, "author": r.author, "note": r.note, "created_at": r.created_at,
                    "author_id": r.author_id} for r in rows]
        frame = pd.DataFrame.from_records(records, columns=[*DECISION_COLUMNS, "author_id"])
        frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True)
        return frame.astype({"version": "int64"})

    def current(self, dataset: str) -> pd.DataFrame:
        """The current decision of every decided finding (``DECISION_COLUMNS`` + author_id);
        findings reopened ("open") are included with that decision."""
        latest: dict[str, _Decision] = {}
        for row in self._rows(dataset):
            latest[row.finding_id] = row
        return self._frame(list(latest.values()))

    def history(self, dataset: str, finding: str | None = None) -> pd.DataFrame:
        """Every version, by finding then version."""
        return self._frame(self._rows(dataset, finding))

    def excluded_ids(self, dataset: str) -> frozenset[str]:
        """Image ids of every finding whose current decision is "excluded"."""
        current = self.current(dataset)
        excluded = current[current["decision"] == "excluded"]
        return frozenset(i for ids in excluded["image_ids"] for i in ids)


def excluded_ids(dataset: str, *, url: str | None = None) -> frozenset[str]:
    """The image ids analysts excluded from ``dataset`` (by its name) after an audit: the
    ``exclude_ids`` every page's cohort filter applies. Empty when nothing was excluded."""
    with DecisionStore(url) as store:
        return store.excluded_ids(dataset)


def excluded_per_patient(images: pd.DataFrame, ids: Iterable[str]) -> dict[str, int]:
    """patient id -> number of that patient's images among ``ids`` (patients with none left
    out): what ``core.export.labeled_export(excluded_images=...)`` writes with the table."""
    wanted = set(map(str, ids))
    chosen = images[images["image_id"].astype(str).isin(wanted)]
    return {str(k): int(v) for k, v in chosen["patient_id"].astype(str).value_counts().items()}
