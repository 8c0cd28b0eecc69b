"""API keys for the HTTP service, stored hashed in the audit database.

A key is shown once, when it is created; the database keeps only its SHA-256 (keys are 256-bit
random tokens, so a plain hash is enough: there is nothing to brute-force). A key has a scope:

* ``customer`` -- a chat channel: start conversations, post messages, read them, wait for replies;
* ``operator`` -- a person or tool acting on conversations: approve, override, escalate;
* ``browser`` -- a key that is published in a web page (the web chat): it can only start a
  conversation, and each start returns a new ``conversation`` key that reaches that one conversation
  alone (post messages, wait for its held and operator replies), never another visitor's.

The key's name is the operator name recorded in the audit chain for operator actions.

Every key belongs to a *tenant* (a bank, a brand, a channel group; ``default`` unless given). A
conversation belongs to the tenant of the key that started it (:class:`ConversationOwner`), and every
route answers 404 for a conversation, a decision or a reply of another tenant, as for one that does
not exist.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Collection
from typing import Literal

from sqlalchemy import inspect, text
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Field, SQLModel, col, select

from sopagent.errors import ApiKeyError, StoreError
from sopagent.store import Store, utcnow

Scope = Literal["customer", "operator", "browser"]
SCOPES: tuple[str, ...] = ("customer", "operator", "browser")
CONVERSATION_SCOPE = "conversation"
"""The scope of a key the service issues for one conversation started with a ``browser`` key."""
KEY_PREFIX = "sop_"
DEFAULT_TENANT = "default"
TENANT_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class ApiKey(SQLModel, table=True):
    """One API key: public id, name, scope and the SHA-256 of the secret (never the secret)."""

    id: str = Field(primary_key=True)
    """Public identifier shown in listings and used to revoke (``key_`` + 12 hex)."""
    name: str
    scope: str = Field(index=True)
    key_sha256: str = Field(index=True, unique=True)
    created_at: str = Field(default_factory=utcnow)
    revoked_at: str | None = None
    tenant: str = Field(default=DEFAULT_TENANT, index=True)
    """The tenant whose conversations this key may start, read and act on."""


class ConversationOwner(SQLModel, table=True):
    """Which tenant a conversation belongs to: the tenant of the key that started it."""

    conversation_id: str = Field(primary_key=True)
    tenant: str = Field(index=True)
    key_id: str
    created_at: str = Field(default_factory=utcnow)


def digest(key: str) -> str:
    """The SHA-256 of a presented key, as stored."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def new_key() -> tuple[str, str]:
    """A new key's public id (``key_`` + 12 hex) and its secret (256 random bits)."""
    return "key_" + secrets.token_hex(6), KEY_PREFIX + secrets.token_urlsafe(32)


def ensure_table(store: Store) -> None:
    """Create the key and ownership tables if this database has none yet (and give keys made before
    tenants existed the ``default`` tenant)."""
    try:
        tables = [SQLModel.metadata.tables[name] for name in ("apikey", "conversationowner")]
        SQLModel.metadata.create_all(store.engine, tables=tables)
        columns = {column["name"] for column in inspect(store.engine).get_columns("apikey")}
        if "tenant" not in columns:
            with store.engine.begin() as connection:
                connection.execute(text("ALTER TABLE apikey ADD COLUMN tenant VARCHAR "
                                        f"NOT NULL DEFAULT '{DEFAULT_TENANT}'"))
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot create the API key tables: {exc}", retryable=True) from exc


def create_key(store: Store, scope: str, name: str | None, tenant: str = DEFAULT_TENANT) -> tuple[ApiKey, str]:
    """Create a key of ``tenant``; return its row and the secret (shown once, never stored). Names are
    unique; without one the key is named after its scope and id (``customer-key_0123...``)."""
    key_id, secret = new_key()
    name = f"{scope}-{key_id}" if name is None else name
    if scope not in SCOPES:
        raise ApiKeyError(f"unknown scope {scope!r}; use one of: {', '.join(SCOPES)}")
    if not name.strip():
        raise ApiKeyError("a key needs a name (the operator or channel it belongs to); pass --name NAME")
    if not TENANT_PATTERN.fullmatch(tenant):
        raise ApiKeyError(f"tenant {tenant!r} is not a tenant name; use lower-case letters, digits, - and _ "
                          "(e.g. --tenant northbank)")
    ensure_table(store)
    with store.session() as session:
        taken = session.exec(select(ApiKey).where(ApiKey.name == name.strip())).first()
    if taken is not None:
        raise ApiKeyError(f"a key named {name.strip()!r} exists already ({taken.id}, tenant {taken.tenant}); the "
                          "name is the operator or channel recorded in the audit log, so each key needs its own "
                          "(pass another --name)")
    row = ApiKey(id=key_id, name=name.strip(), scope=scope, key_sha256=digest(secret),
                 tenant=tenant)
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


def claim_conversation(store: Store, conversation_id: str, key: ApiKey) -> None:
    """Record that ``conversation_id`` belongs to ``key``'s tenant (when the key starts it)."""
    try:
        with store.session() as session:
            session.add(ConversationOwner(conversation_id=conversation_id, tenant=key.tenant, key_id=key.id))
            session.commit()
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot record who owns conversation {conversation_id}: {type(exc).__name__}",
                         retryable=True) from exc


def owners_of(store: Store, conversation_ids: Collection[str]) -> dict[str, str]:
    """The tenant of each of ``conversation_ids`` that a key started (one query)."""
    if not conversation_ids:
        return {}
    try:
        with store.session() as session:
            rows = session.exec(select(ConversationOwner).where(
                col(ConversationOwner.conversation_id).in_(list(conversation_ids)))).all()
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot read who owns conversations: {type(exc).__name__}", retryable=True) from exc
    return {row.conversation_id: row.tenant for row in rows}


def owner_of(store: Store, conversation_id: str) -> ConversationOwner | None:
    """Who started ``conversation_id`` (tenant and key); None for a conversation no key started (the CLI's)."""
    try:
        with store.session() as session:
            return session.get(ConversationOwner, conversation_id)
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot read who owns conversation {conversation_id}: {type(exc).__name__}",
                         retryable=True) from exc


def tenant_of(store: Store, conversation_id: str) -> str | None:
    """The tenant ``conversation_id`` belongs to; None for a conversation no key started (the CLI's)."""
    row = owner_of(store, conversation_id)
    return row.tenant if row is not None else None


def may_reach(key: ApiKey, owner: ConversationOwner | None) -> bool:
    """Whether ``key`` reaches a conversation with this owner: its tenant's, and for a ``conversation``
    key only the one conversation it was issued for."""
    if owner is None or owner.tenant != key.tenant:
        return False
    return key.scope != CONVERSATION_SCOPE or owner.key_id == key.id


def issue_conversation_key(store: Store, conversation_id: str, browser_key: ApiKey) -> str:
    """Create the key of one conversation a ``browser`` key started, record the conversation as its own,
    and return the secret (given to that browser once, never stored)."""
    key_id, secret = new_key()
    row = ApiKey(id=key_id, name=f"chat-{conversation_id}", scope=CONVERSATION_SCOPE, key_sha256=digest(secret),
                 tenant=browser_key.tenant)
    try:
        with store.session() as session:
            session.add(row)
            session.add(ConversationOwner(conversation_id=conversation_id, tenant=row.tenant, key_id=row.id))
            session.commit()
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot issue the key of conversation {conversation_id}: {type(exc).__name__}",
                         retryable=True) from exc
    return secret
