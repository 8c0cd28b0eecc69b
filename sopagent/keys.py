"""API keys for the HTTP service, stored hashed in the audit database.

A key is shown once, when it is created; the database keeps only its SHA-256 (keys are 256-bit
random tokens, so a plain hash is enough: there is nothing to brute-force). A key has a scope:

* ``customer`` -- a chat channel: start conversations, post messages, read them, wait for replies;
* ``operator`` -- a person or tool acting on conversations: approve, override, escalate.

The key's name is the operator name recorded in the audit chain for operator actions.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Literal

from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Field, SQLModel, col, select

from sopagent.errors import ApiKeyError, StoreError
from sopagent.store import Store, utcnow

Scope = Literal["customer", "operator"]
SCOPES: tuple[str, ...] = ("customer", "operator")
KEY_PREFIX = "sop_"


class ApiKey(SQLModel, table=True):
    """One API key: public id, name, scope and the SHA-256 of the secret (never the secret)."""

    id: str = Field(primary_key=True)
    """Public identifier shown in listings and used to revoke (``key_`` + 12 hex)."""
    name: str
    scope: str = Field(index=True)
    key_sha256: str = Field(index=True, unique=True)
    created_at: str = Field(default_factory=utcnow)
    revoked_at: str | None = None


def digest(key: str) -> str:
    """The SHA-256 of a presented key, as stored."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def ensure_table(store: Store) -> None:
    """Create the key table if this database has none yet."""
    try:
        SQLModel.metadata.create_all(store.engine, tables=[ApiKey.__table__])  # type: ignore[list-item]
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot create the API key table: {exc}", retryable=True) from exc


def create_key(store: Store, scope: str, name: str) -> tuple[ApiKey, str]:
    """Create a key; return its row and the secret (shown once, never stored)."""
    if scope not in SCOPES:
        raise ApiKeyError(f"unknown scope {scope!r}; use one of: {', '.join(SCOPES)}")
    if not name.strip():
        raise ApiKeyError("a key needs a name (the operator or channel it belongs to); pass --name NAME")
    ensure_table(store)
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(id="key_" + secrets.token_hex(6), name=name.strip(), scope=scope, key_sha256=digest(secret))
    try:
        with store.session() as session:
            session.add(row)
            session.commit()
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot store the new key: {exc}", retryable=True) from exc
    return row, secret


def revoke_key(store: Store, key_id: str) -> ApiKey:
    """Revoke a key by its public id; it stops working at once in every process."""
    ensure_table(store)
    with store.session() as session:
        row = session.get(ApiKey, key_id)
        if row is None:
            raise ApiKeyError(f"no key {key_id!r}; `sopagent keys list` shows the ids")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
            session.add(row)
            session.commit()
        return row


def list_keys(store: Store) -> list[ApiKey]:
    """Every key (without secrets), oldest first."""
    ensure_table(store)
    with store.session() as session:
        return list(session.exec(select(ApiKey).order_by(col(ApiKey.created_at))).all())


def authenticate(store: Store, presented: str) -> ApiKey | None:
    """The live key matching ``presented``, or None (unknown or revoked)."""
    try:
        with store.session() as session:
            row = session.exec(select(ApiKey).where(ApiKey.key_sha256 == digest(presented))).first()
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot check the API key: the audit store is unreachable ({type(exc).__name__})",
                         retryable=True) from exc
    if row is None or row.revoked_at is not None:
        return None
    return row
