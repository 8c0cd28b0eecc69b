"""The audit store: conversations, decisions and policy versions in SQL (SQLModel).

A SQLite file by default, any SQLAlchemy URL otherwise (PostgreSQL when several processes share
state). Every decision is hash-chained to the one before it; a decision and the conversation's
new state are committed in one transaction, and the engine returns a reply only after that commit.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from typing import Any, Iterator

from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Field, Session, SQLModel, create_engine, select

from sopagent.errors import ConversationError, StoreError

DB_ENV = "SOPAGENT_DB"
DEFAULT_DB_URL = "sqlite:///sopagent.db"
GENESIS_HASH = "0" * 64


def database_url(url: str | None = None) -> str:
    """``url``, else ``$SOPAGENT_DB``, else a SQLite file ``sopagent.db`` in the current folder."""
    chosen = url or os.environ.get(DB_ENV) or DEFAULT_DB_URL
    if "://" not in chosen:  # a bare path means a SQLite file
        chosen = f"sqlite:///{chosen}"
    return chosen


def utcnow() -> str:
    """Current UTC time as ISO 8601 with microseconds (the audit log's clock)."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")


class PolicyVersion(SQLModel, table=True):
    """A snapshot of a policy's source and catalog; every decision points to one."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True)
    version: str
    source_sha256: str
    catalog_sha256: str
    source: str
    catalog_source: str
    created_at: str = Field(default_factory=utcnow)


class Conversation(SQLModel, table=True):
    """One customer conversation and its current state."""

    id: str = Field(primary_key=True)
    policy_name: str = Field(index=True)
    policy_version_id: int = Field(foreign_key="policyversion.id")
    customer_ref: str | None = Field(default=None, index=True)
    metadata_json: str = "{}"
    step: str
    status: str = "active"
    """active, awaiting_approval, escalated or closed."""
    known_json: str = "{}"
    turns: int = 0
    revision: int = 0
    """Bumped by every committed turn: two turns from one state cannot both commit."""
    created_at: str = Field(default_factory=utcnow)
    updated_at: str = Field(default_factory=utcnow, index=True)


class Decision(SQLModel, table=True):
    """One agent turn: what was read, what was allowed, what was chosen and said, and how long it took."""

    id: int | None = Field(default=None, primary_key=True)
    conversation_id: str = Field(foreign_key="conversation.id", index=True)
    turn: int
    created_at: str = Field(default_factory=utcnow, index=True)
    policy_version_id: int = Field(foreign_key="policyversion.id")
    model_name: str
    step: str
    customer_text: str
    facts_json: str
    options_json: str
    """Every allowed option: response id, bound slots, next step, probability."""
    chosen_index: int | None = None
    response_id: str | None = Field(default=None, index=True)
    chosen_by: str
    """policy (a single allowed option), model, fallback, or operator:NAME."""
    confidence: float | None = None
    status: str = Field(index=True)
    """sent, pending, approved, overridden or escalated."""
    reply_text: str | None = None
    """The rendered chosen reply (for a pending decision: what waits for approval)."""
    sent_text: str | None = None
    """What the customer actually received at this turn (for a pending decision: the holding reply)."""
    next_step: str
    error: str | None = None
    latency_json: str = "{}"
    prev_hash: str
    hash: str = Field(index=True)


class ChainHead(SQLModel, table=True):
    """A single row: the last decision hash. Updating it first serializes appends across processes."""

    id: int = Field(default=1, primary_key=True)
    last_hash: str = GENESIS_HASH
    length: int = 0


HASHED_FIELDS = (
    "conversation_id", "turn", "created_at", "policy_version_id", "model_name", "step", "customer_text",
    "facts_json", "options_json", "chosen_index", "response_id", "chosen_by", "confidence", "status",
    "reply_text", "sent_text", "next_step", "error", "latency_json",
)


def decision_hash(prev_hash: str, decision: Decision) -> str:
    """SHA256 over the previous hash and the decision's canonical JSON content."""
    content = {name: getattr(decision, name) for name in HASHED_FIELDS}
    payload = prev_hash + json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class Store:
    """Access to the audit database."""

    def __init__(self, url: str | None = None, *, timeout_s: float = 5.0) -> None:
        self.url = database_url(url)
        connect_args: dict[str, Any] = {}
        if self.url.startswith("sqlite"):
            connect_args = {"timeout": timeout_s, "check_same_thread": False}
        try:
            self.engine: Engine = create_engine(self.url, connect_args=connect_args)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise StoreError(f"cannot open the audit store {self.url!r}: {exc}\n"
                             "  fix: pass --db sqlite:///PATH or a valid database URL") from exc
        if self.url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        try:
            SQLModel.metadata.create_all(self.engine)
            with Session(self.engine) as session:
                if session.get(ChainHead, 1) is None:
                    session.add(ChainHead())
                    session.commit()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot initialise the audit store {self.url!r}: {_short(exc)}\n"
                             "  fix: check that the path is writable and the server is reachable",
                             retryable=True) from exc

    def session(self) -> Session:
        """A new ORM session (expire_on_commit off, so rows stay readable after commit)."""
        return Session(self.engine, expire_on_commit=False)

    # --- policy versions ----------------------------------------------------------------------

    def policy_version(self, name: str, version: str, source: str, source_sha256: str,
                       catalog_source: str, catalog_sha256: str) -> PolicyVersion:
        """Return the stored snapshot for this exact source and catalog, creating it if new."""
        try:
            with self.session() as session:
                found = session.exec(select(PolicyVersion).where(
                    PolicyVersion.name == name, PolicyVersion.source_sha256 == source_sha256,
                    PolicyVersion.catalog_sha256 == catalog_sha256)).first()
                if found:
                    return found
                row = PolicyVersion(name=name, version=version, source=source, source_sha256=source_sha256,
                                    catalog_source=catalog_source, catalog_sha256=catalog_sha256)
                session.add(row)
                session.commit()
                return row
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot record the policy version: {_short(exc)}", retryable=True) from exc

    # --- conversations -------------------------------------------------------------------------

    def create_conversation(self, conversation: Conversation) -> Conversation:
        """Insert a new conversation."""
        try:
            with self.session() as session:
                session.add(conversation)
                session.commit()
                return conversation
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot start the conversation: {_short(exc)}", retryable=True) from exc

    def get_conversation(self, conversation_id: str) -> Conversation:
        """Load a conversation or raise :class:`ConversationError`."""
        try:
            with self.session() as session:
                found = session.get(Conversation, conversation_id)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read conversation {conversation_id}: {_short(exc)}", retryable=True) from exc
        if found is None:
            raise ConversationError(f"unknown conversation {conversation_id!r}; start one first")
        return found

    def decisions(self, conversation_id: str | None = None) -> list[Decision]:
        """Decisions in chain order, optionally of one conversation."""
        try:
            with self.session() as session:
                query = select(Decision).order_by(Decision.id)
                if conversation_id is not None:
                    query = query.where(Decision.conversation_id == conversation_id)
                return list(session.exec(query).all())
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read decisions: {_short(exc)}", retryable=True) from exc

    def append_turn(self, decision: Decision, conversation: Conversation, expected_revision: int) -> Decision:
        """Commit a decision (hash-chained) and the conversation's new state in one transaction.

        Raises :class:`StoreError` if the write fails (nothing is committed) and
        :class:`ConversationError` if another turn of this conversation committed first.
        """
        try:
            with self.session() as session:
                # Lock the chain head first: this serializes appends across processes.
                session.execute(text("UPDATE chainhead SET length = length + 1 WHERE id = 1"))
                head = session.get(ChainHead, 1)
                assert head is not None
                conversation.revision = expected_revision + 1
                updated = session.execute(
                    text("UPDATE conversation SET step=:step, status=:status, known_json=:known, turns=:turns, "
                         "revision=:rev, updated_at=:now WHERE id=:id AND revision=:expected"),
                    {"step": conversation.step, "status": conversation.status, "known": conversation.known_json,
                     "turns": conversation.turns, "rev": conversation.revision, "now": decision.created_at,
                     "id": conversation.id, "expected": expected_revision})
                if updated.rowcount != 1:
                    session.rollback()
                    raise ConversationError(
                        f"conversation {conversation.id} changed while this turn ran; send the message again",
                        retryable=True)
                decision.prev_hash = head.last_hash
                decision.hash = decision_hash(head.last_hash, decision)
                head.last_hash = decision.hash
                session.add(decision)
                session.add(head)
                session.commit()
                return decision
        except ConversationError:
            raise
        except SQLAlchemyError as exc:
            raise StoreError(f"the audit store could not record this turn, so no reply was sent: {_short(exc)}",
                             retryable=True) from exc

    def verify_chain(self) -> tuple[bool, int | None]:
        """Recompute every decision hash in order; return (intact, id of the first broken decision)."""
        prev = GENESIS_HASH
        for decision in self.iter_decisions():
            if decision.prev_hash != prev or decision_hash(prev, decision) != decision.hash:
                return False, decision.id
            prev = decision.hash
        with self.session() as session:
            head = session.get(ChainHead, 1)
        return (head is not None and head.last_hash == prev), None

    def iter_decisions(self, batch: int = 5000) -> Iterator[Decision]:
        """All decisions in chain order, read in batches."""
        last = 0
        while True:
            with self.session() as session:
                rows = session.exec(select(Decision).where(Decision.id > last).order_by(Decision.id).limit(batch)).all()
            if not rows:
                return
            yield from rows
            last = rows[-1].id or last


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()


def _short(exc: BaseException) -> str:
    original = getattr(exc, "orig", None)
    return str(original or exc).splitlines()[0]
