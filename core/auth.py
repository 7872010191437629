"""Who may do what: roles, permission checks, the roles table and the audit log.

Three roles, each with everything the one before it may do:

* ``viewer``: browse maps, clusters, drift, classifiers and fairness; download nothing that
  identifies a patient.
* ``labeler``: + edit and undo cluster mappings and patient overrides, export labelled tables.
* ``admin``: + ingest, server folders, imports, deleting datasets and runs, managing roles, and
  reading the audit log.

A signed-in user's role comes from an OpenID Connect claim (its name is configurable, default
``roles``) or, when the claim is absent or names no role, from the roles table in the label
database (keyed by e-mail), or else from a default (``viewer``, or ``none`` to let nobody in
whom an admin has not listed). Without sign-in configured the app runs in single-user mode and
the local user is admin.

The core refuses too: every write in ``core.labels.store`` and here calls ``require`` with the
acting ``User``, and records the user's stable id and e-mail (never a typed name) in the
audit log, in the same transaction as the write.
"""

from __future__ import annotations

import getpass
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from sqlalchemy import DateTime, Integer, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from core.db import Base, DatabaseClient

__all__ = [
    "AUDIT_COLUMNS",
    "DEFAULT_ROLE_CLAIM",
    "NO_ROLE",
    "PERMISSIONS",
    "ROLES",
    "AccessStore",
    "User",
    "can",
    "local_user",
    "require",
    "role_from_claims",
    "user_from_claims",
]

ROLES = ("viewer", "labeler", "admin")
NO_ROLE = "none"
DEFAULT_ROLE_CLAIM = "roles"
# permission -> (least role that has it, what it lets you do: for refusal messages)
PERMISSIONS: dict[str, tuple[str, str]] = {
    "browse": ("viewer", "browse maps, clusters, drift, classifiers and fairness"),
    "label": ("labeler", "edit or undo cluster mappings and patient overrides"),
    "export_patients": ("labeler", "download labelled patient tables"),
    "finetune": ("labeler", "fine-tune an image encoder on the labels"),
    "ingest": ("admin", "ingest datasets"),
    "server_folders": ("admin", "read folders on the server"),
    "import": ("admin", "import files"),
    "delete": ("admin", "delete datasets and runs"),
    "manage_roles": ("admin", "change who has which role"),
    "audit": ("admin", "read the audit log"),
}
AUDIT_COLUMNS = ["at", "user_id", "email", "role", "action", "target", "detail"]
ROLE_COLUMNS = ["email", "role", "updated_by", "updated_at"]
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_ROLE_PREFIXES = ("scanatlas.", "scanatlas-", "scanatlas_", "scanatlas:")


@dataclass(frozen=True)
class User:
    """The person (or process) acting.

    id : stable identifier: ``"<issuer>|<sub>"`` for a signed-in user, ``"local:<name>"`` in
        single-user mode, ``"cli:<name>"`` for the command line.
    email : the e-mail the identity provider vouched for ("" when it gave none).
    name : display name. role : one of ``ROLES`` or ``"none"``.
    source : where the role came from: ``claim``, ``table``, ``default``, ``single-user``, ``cli``.
    """

    id: str
    email: str
    name: str
    role: str
    source: str

    @property
    def label(self) -> str:
        """How the user is shown: the e-mail, else the name, else the id."""
        return self.email or self.name or self.id

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def _rank(role: str) -> int:
    return ROLES.index(role) + 1 if role in ROLES else 0


def can(user: User | None, permission: str) -> bool:
    """Whether ``user`` may do ``permission`` (a key of ``PERMISSIONS``); ``None`` may do nothing.

    Raises ``ValueError`` for an unknown permission (a typo must not silently deny or allow).
    """
    if permission not in PERMISSIONS:
        raise ValueError(f"permission={permission!r} is unknown; valid: {sorted(PERMISSIONS)}")
    return user is not None and _rank(user.role) >= _rank(PERMISSIONS[permission][0])


def require(user: User | None, permission: str) -> User:
    """Return ``user`` if it may do ``permission``; otherwise raise ``PermissionError`` naming
    the user, their role and the role needed."""
    if can(user, permission):
        assert user is not None
        return user
    needed, what = PERMISSIONS[permission]
    who = "nobody is signed in" if user is None else f"{user.label} has role {user.role!r}"
    raise PermissionError(f"not allowed to {what}: {who}; this needs role {needed!r} or higher")


def _normalise_role(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    role = value.strip().lower()
    for prefix in _ROLE_PREFIXES:
        if role.startswith(prefix):
            role = role[len(prefix):]
    return role if role in ROLES else None


def role_from_claims(claims: Mapping[str, Any], claim: str = DEFAULT_ROLE_CLAIM) -> str | None:
    """The highest role named in ``claims[claim]``, or ``None`` when it names none.

    The claim may be a string (``"labeler"``; several separated by spaces or commas) or a list
    (``["viewer", "labeler"]``, as Entra ID app roles and Keycloak client roles come).
    Case is ignored and a ``scanatlas.`` / ``scanatlas-`` prefix is allowed (``ScanAtlas.Admin``).
    Unknown values are ignored. A dotted claim name (``realm_access.roles``) looks inside
    nested objects, as Keycloak nests realm roles.
    """
    value: Any = claims
    for part in claim.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if isinstance(value, str):
        values: Iterable[Any] = re.split(r"[\s,]+", value)
    elif isinstance(value, list | tuple):
        values = value
    else:
        return None
    roles = [role for role in map(_normalise_role, values) if role]
    return max(roles, key=_rank) if roles else None


def local_user(*, source: str = "single-user") -> User:
    """The local user in single-user mode (``source="single-user"``, id ``local:NAME``) or on
    the command line (``source="cli"``, id ``cli:NAME``): admin either way, since whoever runs
    the process owns its files."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "unknown"
    prefix = "cli" if source == "cli" else "local"
    return User(id=f"{prefix}:{name}", email="", name=name, role="admin", source=source)


def user_from_claims(claims: Mapping[str, Any], *, role_claim: str = DEFAULT_ROLE_CLAIM,
                     roles_table: AccessStore | None = None, default_role: str = "viewer") -> User:
    """Build the signed-in ``User`` from an identity token's claims (``st.user``).

    Role: the ``role_claim`` claim if it names a role, else the roles table row for the
    e-mail (unless ``email_verified`` is false), else ``default_role`` (one of ``ROLES`` or ``"none"``).

    Raises ``ValueError`` if the claims carry no ``sub`` (then there is no stable id) or
    ``default_role`` is not a role.
    """
    if default_role not in (*ROLES, NO_ROLE):
        raise ValueError(f"default_role={default_role!r} must be one of {[*ROLES, NO_ROLE]}")
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise ValueError("the identity token has no 'sub' claim, so the user has no stable id")
    issuer = claims.get("iss")
    user_id = f"{issuer}|{subject}" if isinstance(issuer, str) and issuer else subject
    email = claims.get("email") if isinstance(claims.get("email"), str) else ""
    name = claims.get("name") if isinstance(claims.get("name"), str) else ""
    role, source = role_from_claims(claims, role_claim), "claim"
    # The table is keyed by e-mail: trust it only when the provider has not said it is unverified.
    if role is None and roles_table is not None and email and claims.get("email_verified") is not False:
        role, source = roles_table.role_for(email), "table"
    if role is None:
        role, source = default_role, "default"
    return User(id=user_id, email=email.strip().lower(), name=name.strip(), role=role, source=source)


# -- tables --------------------------------------------------------------------------------------

class _UserRole(Base):
    __tablename__ = "user_roles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    updated_by: Mapped[str] = mapped_column(String(512))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class _AuditEvent(Base):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    user_id: Mapped[str] = mapped_column(String(512), index=True)
    email: Mapped[str] = mapped_column(String(320))
    role: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(Text)
    detail: Mapped[str] = mapped_column(Text, default="")


def record_event(session: Session, user: User, action: str, target: str, detail: str = "") -> None:
    """Add an audit row to ``session`` (it commits with the write it describes)."""
    session.add(_AuditEvent(at=datetime.now(UTC), user_id=user.id, email=user.email, role=user.role,
                            action=action, target=target, detail=detail))


class AccessStore(DatabaseClient):
    """The roles table and the audit log, in the label database.

    Parameters
    ----------
    url : SQLAlchemy URL; ``None`` means ``core.settings.database_url()``.
    """

    # -- roles ----------------------------------------------------------------------------------
    def role_for(self, email: str) -> str | None:
        """The role the table gives ``email`` (case ignored), or ``None``."""
        with self._session() as session:
            row = session.scalars(select(_UserRole).where(_UserRole.email == email.strip().lower())).first()
            return row.role if row else None

    def roles(self) -> pd.DataFrame:
        """Every row of the roles table, by e-mail: ``email, role, updated_by, updated_at``."""
        with self._session() as session:
            rows = session.scalars(select(_UserRole).order_by(_UserRole.email)).all()
            records = [{c: getattr(r, c) for c in ROLE_COLUMNS} for r in rows]
        frame = pd.DataFrame.from_records(records, columns=ROLE_COLUMNS)
        frame["updated_at"] = pd.to_datetime(frame["updated_at"], utc=True)
        return frame

    def set_role(self, email: str, role: str, *, actor: User) -> None:
        """Give ``email`` ``role`` (one of ``ROLES``), or remove its row with ``role="none"``.

        Raises ``PermissionError`` unless ``actor`` may manage roles, and ``ValueError`` for a
        malformed e-mail, an unknown role, or an admin removing their own admin role (so the
        last admin cannot lock everyone out by accident).
        """
        require(actor, "manage_roles")
        email = email.strip().lower() if isinstance(email, str) else ""
        if not _EMAIL.match(email):
            raise ValueError(f"email={email!r} is not an e-mail address")
        if role not in (*ROLES, NO_ROLE):
            raise ValueError(f"role={role!r} must be one of {[*ROLES, NO_ROLE]}")
        if actor.email and email == actor.email and role != "admin":
            raise ValueError("you cannot take away your own admin role; ask another admin")
        with self._session() as session, session.begin():
            row = session.scalars(select(_UserRole).where(_UserRole.email == email)).first()
            before = row.role if row else NO_ROLE
            if role == NO_ROLE:
                if row is not None:
                    session.delete(row)
            elif row is None:
                session.add(_UserRole(email=email, role=role, updated_by=actor.label, updated_at=datetime.now(UTC)))
            else:
                row.role, row.updated_by, row.updated_at = role, actor.label, datetime.now(UTC)
            record_event(session, actor, "role.set", email, f"{before} -> {role}")

    # -- audit ----------------------------------------------------------------------------------
    def record(self, user: User, action: str, target: str, detail: str = "") -> None:
        """Record one write done outside the label database (ingest, import, deletion)."""
        if not action or not isinstance(action, str):
            raise ValueError(f"action={action!r} must be a non-empty string")
        with self._session() as session, session.begin():
            record_event(session, user, action, str(target), str(detail))

    def events(self, *, limit: int = 1000, action: str | None = None, user: str | None = None) -> pd.DataFrame:
        """The newest ``limit`` audit rows, newest first: ``at`` (UTC), ``user_id, email, role,
        action, target, detail``. ``action`` keeps one action or a prefix ending in ``.``
        (``"mapping."``); ``user`` keeps rows whose e-mail or id equals it."""
        if limit < 1:
            raise ValueError(f"limit={limit} must be >= 1")
        query = select(_AuditEvent).order_by(_AuditEvent.id.desc()).limit(limit)
        if action:
            query = query.where(_AuditEvent.action.startswith(action) if action.endswith(".")
                                else _AuditEvent.action == action)
        if user:
            query = query.where((_AuditEvent.email == user.strip().lower()) | (_AuditEvent.user_id == user))
        with self._session() as session:
            records = [{c: getattr(r, c) for c in AUDIT_COLUMNS} for r in session.scalars(query)]
        frame = pd.DataFrame.from_records(records, columns=AUDIT_COLUMNS)
        frame["at"] = pd.to_datetime(frame["at"], utc=True)
        return frame


def is_loopback(address: str | None) -> bool:
    """Whether a listen address serves this computer only (``localhost``, 127.0.0.0/8, ``::1``,
    brackets allowed); an unset address means every interface. The app, ``serve-app`` and the
    prediction API refuse any other address without sign-in (or ``SCANATLAS_ALLOW_ANONYMOUS=1``)."""
    if not address or not address.strip():
        return False
    if address.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip().strip("[]")).is_loopback
    except ValueError:
        return False
