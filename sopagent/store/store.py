"""The audit store: conversations, decisions, operator actions and policy versions in SQL (SQLModel).

A SQLite file by default, any SQLAlchemy URL otherwise (PostgreSQL when several processes share
state). Decisions and operator actions are appended to one hash chain (see :mod:`.chain`); a chained
row and the conversation's new state are committed in one transaction, and the engine returns a
reply only after that commit.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import socket
from typing import Any, Callable, Iterator, Sequence

from filelock import FileLock, Timeout
from sqlalchemy import event, insert, make_url, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, SQLModel, col, create_engine, select

from sopagent.errors import ConversationError, StoreError
from sopagent.settings import Settings, as_database_url
from sopagent.status import Status
from sopagent.store.chain import ChainReport, ChainRow, merge_by_seq, policy_digest, seal
from sopagent.store.tables import (
    ChainHead,
    Conversation,
    Decision,
    FailedCheck,
    OperatorAction,
    OutboxEffect,
    PolicyVersion,
    RequestKey,
    utcnow,
)

RESOLVING_ACTIONS = ("approve", "override", "escalate")
"""Operator actions that settle a pending decision; only one may exist per decision."""
SCHEMA_LOCK_KEY = 0x736F7061  # "sopa": the advisory lock that serializes schema creation on PostgreSQL


def database_url(url: str | None = None) -> str:
    """``url``, else the ``db`` setting (``$SOPAGENT_DB``, ``sopagent.toml``, else a SQLite file
    ``sopagent.db`` in the current folder); a bare path means a SQLite file. The settings are read
    only when no ``url`` is given."""
    return as_database_url(url) if url else Settings.load().database_url()


def subject_digest(policy_name: str, check: str, subject: str) -> str:
    """The digest a failed check's subject is stored as: the table holds no readable value (a subject
    with few possible values, such as four digits, can still be found by trying them all)."""
    return hashlib.sha256(f"{policy_name}\x00{check}\x00{subject}".encode("utf-8", "surrogatepass")).hexdigest()


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
            raise StoreError(f"cannot open the audit store {self.url!r}: {exc}",
                             fix="pass --db sqlite:///PATH or a valid database URL") from exc
        if self.url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        try:
            with self._first_open_lock(timeout_s):
                self._create_private_file()
                self._create_schema()
        except Timeout as exc:
            raise StoreError(f"cannot initialise the audit store {self.url!r}: another process held {exc.lock_file} "
                             f"for over {timeout_s:g} s",
                             fix="wait for the other process to finish opening it, or remove the .lock file if "
                             "no sopagent process is running", retryable=True) from exc
        except OSError as exc:
            raise StoreError(f"cannot initialise the audit store {self.url!r}: {exc}",
                             fix="check that the folder exists and is writable") from exc
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot initialise the audit store {self.url!r}: {_short(exc)}",
                             fix="check that the path is writable and the server is reachable",
                             retryable=True) from exc

    def _first_open_lock(self, timeout_s: float) -> contextlib.AbstractContextManager[Any]:
        """A lock file beside a SQLite database, held while a process sets it up.

        Switching a new SQLite file to WAL needs an exclusive lock, and SQLite answers "database is
        locked" at once, without waiting, when two connections both try it; so processes opening the
        same new file (``sopagent serve --workers N``) take turns here. Other databases need none.
        """
        database = make_url(self.url).database if self.url.startswith("sqlite") else None
        if not database or database == ":memory:" or database.startswith("file:"):
            return contextlib.nullcontext()
        folder = os.path.dirname(os.path.abspath(database))
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"the folder {folder} does not exist")
        return FileLock(f"{database}.lock", timeout=timeout_s)

    def _create_private_file(self) -> None:
        """Create a new SQLite file readable and writable by its owner only (0600); SQLite gives its
        journal files the same mode. The audit log holds personal data."""
        database = make_url(self.url).database if self.url.startswith("sqlite") else None
        if not database or database == ":memory:" or database.startswith("file:") or os.path.exists(database):
            return
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))

    def _create_schema(self) -> None:
        """Create the tables and the chain head if missing, in one transaction.

        Processes that open a new database at the same moment (``sopagent serve --workers N``) create
        it one after the other: on PostgreSQL under a transaction-level advisory lock, on SQLite under
        the lock file of :meth:`_first_open_lock`. Without that the second ``CREATE TABLE`` fails
        (PostgreSQL: a duplicate type name; SQLite: "table already exists").
        """
        with self.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
            SQLModel.metadata.create_all(connection)
            if connection.execute(select(ChainHead.id).where(ChainHead.id == 1)).first() is None:
                connection.execute(insert(ChainHead).values(**ChainHead().model_dump()))

    def session(self) -> Session:
        """A new ORM session (expire_on_commit off, so rows stay readable after commit)."""
        return Session(self.engine, expire_on_commit=False)

    # --- policy versions ----------------------------------------------------------------------

    def policy_version(self, name: str, version: str, source: str, source_sha256: str,
                       catalog_source: str, catalog_sha256: str, modules_json: str = "{}") -> PolicyVersion:
        """Return the stored snapshot for this exact source, catalog and helper modules, creating it if new."""
        from sopagent.store.verify import modules_digest

        modules_sha256 = modules_digest(modules_json)
        try:
            with self.session() as session:
                found = session.exec(select(PolicyVersion).where(
                    PolicyVersion.name == name, PolicyVersion.source_sha256 == source_sha256,
                    PolicyVersion.catalog_sha256 == catalog_sha256,
                    PolicyVersion.modules_sha256 == modules_sha256)).first()
                if found:
                    return found
                row = PolicyVersion(name=name, version=version, source=source, source_sha256=source_sha256,
                                    catalog_source=catalog_source, catalog_sha256=catalog_sha256,
                                    modules_json=modules_json, modules_sha256=modules_sha256)
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

    def latest_conversation(self, customer_ref: str, policy_name: str) -> Conversation | None:
        """The newest conversation of this customer reference under this policy, or None."""
        try:
            with self.session() as session:
                return session.exec(select(Conversation).where(
                    Conversation.customer_ref == customer_ref, Conversation.policy_name == policy_name)
                    .order_by(col(Conversation.created_at).desc())).first()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot look up the conversations of {customer_ref!r}: {_short(exc)}",
                             retryable=True) from exc

    def decisions(self, conversation_id: str | None = None) -> list[Decision]:
        """Decisions in chain order, optionally of one conversation."""
        return self._chain_rows(Decision, conversation_id, "decisions")

    def actions(self, conversation_id: str | None = None) -> list[OperatorAction]:
        """Operator actions in chain order, optionally of one conversation."""
        return self._chain_rows(OperatorAction, conversation_id, "operator actions")

    def _chain_rows(self, table: Any, conversation_id: str | None, what: str) -> list[Any]:
        try:
            with self.session() as session:
                query = select(table).order_by(table.seq)
                if conversation_id is not None:
                    query = query.where(table.conversation_id == conversation_id)
                return list(session.exec(query).all())
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read {what}: {_short(exc)}", retryable=True) from exc

    def transcript(self, conversation_id: str) -> list[ChainRow]:
        """A conversation's decisions and operator actions merged in chain order."""
        return list(merge_by_seq(iter(self.decisions(conversation_id)), iter(self.actions(conversation_id))))

    def resolution(self, decision_id: int) -> OperatorAction | None:
        """The operator action that settled a pending decision, if any."""
        try:
            with self.session() as session:
                return session.exec(select(OperatorAction).where(
                    OperatorAction.decision_id == decision_id,
                    col(OperatorAction.action).in_(RESOLVING_ACTIONS))).first()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read operator actions: {_short(exc)}", retryable=True) from exc

    def effects_outcome(self, decision_id: int) -> OperatorAction | None:
        """The chained ``effects`` action that recorded the outcome of a decision's effects, if any."""
        try:
            with self.session() as session:
                return session.exec(select(OperatorAction).where(
                    OperatorAction.decision_id == decision_id, OperatorAction.action == "effects")).first()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read operator actions: {_short(exc)}", retryable=True) from exc

    def operator_replies(self, conversation_id: str, after_seq: int = 0) -> list[OperatorAction]:
        """The catalog replies operators sent in a conversation after chain position ``after_seq``, in order."""
        try:
            with self.session() as session:
                return list(session.exec(select(OperatorAction).where(
                    OperatorAction.conversation_id == conversation_id, OperatorAction.action == "operator_reply",
                    OperatorAction.seq > after_seq).order_by(col(OperatorAction.seq))).all())
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read operator actions: {_short(exc)}", retryable=True) from exc

    def pending_decisions(self) -> list[Decision]:
        """Decisions waiting for an operator (status pending, not yet approved, overridden or escalated)."""
        settled = select(OperatorAction.decision_id).where(col(OperatorAction.action).in_(RESOLVING_ACTIONS),
                                                           col(OperatorAction.decision_id).is_not(None))
        try:
            with self.session() as session:
                return list(session.exec(select(Decision).where(
                    Decision.status == Status.PENDING.value, col(Decision.id).not_in(settled))
                    .order_by(col(Decision.seq))).all())
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read the approval queue: {_short(exc)}", retryable=True) from exc

    def append_turn(self, decision: Decision, conversation: Conversation, expected_revision: int,
                    effects: Sequence[OutboxEffect] = (), request_key: str | None = None,
                    failed_checks: Sequence[tuple[str, str]] = ()) -> Decision:
        """Commit a decision (chained), its planned effects (the outbox), the client's request key,
        the checks its step saw fail (``(check, subject)``) and the conversation's new state in one
        transaction.

        Each effect gets the decision's id and an idempotency key derived from the decision's chain
        hash. Raises :class:`StoreError` if the write fails (nothing is committed, so nothing runs)
        and :class:`ConversationError` if another turn of this conversation committed first.
        """
        def plan(session: Session, row: Decision) -> None:
            add_effects(session, row, effects)
            if request_key is not None:
                session.add(RequestKey(conversation_id=row.conversation_id, key=request_key,
                                       decision_id=row.id or 0, created_at=row.created_at))
            for check, subject in failed_checks:
                session.add(FailedCheck(policy_name=conversation.policy_name, check=check,
                                        subject_digest=subject_digest(conversation.policy_name, check, subject),
                                        decision_id=row.id or 0, created_at=row.created_at))

        return self._append(decision, conversation, expected_revision,
                            plan if effects or request_key is not None or failed_checks else None)

    def recent_failures(self, policy_name: str, check: str, subject: str, since: str) -> int:
        """How many times ``check`` failed for ``subject`` under ``policy_name`` since the ISO time ``since``,
        in any conversation."""
        try:
            with self.session() as session:
                rows = session.exec(select(FailedCheck.id).where(
                    FailedCheck.policy_name == policy_name, FailedCheck.check == check,
                    FailedCheck.subject_digest == subject_digest(policy_name, check, subject),
                    FailedCheck.created_at >= since)).all()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read failed checks: {_short(exc)}", retryable=True) from exc
        return len(rows)

    def decision_for_request(self, conversation_id: str, request_key: str) -> Decision | None:
        """The decision a client's earlier request with this idempotency key produced, if any."""
        try:
            with self.session() as session:
                found = session.exec(select(RequestKey).where(
                    RequestKey.conversation_id == conversation_id, RequestKey.key == request_key)).first()
                return session.get(Decision, found.decision_id) if found is not None else None
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read request keys: {_short(exc)}", retryable=True) from exc

    def append_action(self, action: OperatorAction, conversation: Conversation | None = None,
                      expected_revision: int | None = None,
                      then: Callable[[Session, OperatorAction], None] | None = None) -> OperatorAction:
        """Commit an operator action (chained) and, if given, the conversation's new state.

        ``then`` runs inside the same transaction once the action has its chain position (the
        operator endpoints use it to release, cancel or plan the decision's effects). A resolving
        action (approve, override, escalate) on a decision that another operator already settled
        raises :class:`ConversationError` naming who did it; nothing is written.
        """
        return self._append(action, conversation, expected_revision, then)

    # --- the effect outbox -------------------------------------------------------------------

    def effects(self, decision_id: int | None = None, conversation_id: str | None = None) -> list[OutboxEffect]:
        """Outbox rows of a decision or a conversation, in order."""
        try:
            with self.session() as session:
                query = select(OutboxEffect).order_by(col(OutboxEffect.decision_id), col(OutboxEffect.option_index),
                                                col(OutboxEffect.position))
                if decision_id is not None:
                    query = query.where(OutboxEffect.decision_id == decision_id)
                if conversation_id is not None:
                    query = query.where(OutboxEffect.conversation_id == conversation_id)
                return list(session.exec(query).all())
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read the effect outbox: {_short(exc)}", retryable=True) from exc

    def effects_by_decision(self) -> dict[int, list[OutboxEffect]]:
        """Every outbox row, grouped by decision id, each decision's in order."""
        grouped: dict[int, list[OutboxEffect]] = {}
        for effect in self.effects():
            grouped.setdefault(effect.decision_id, []).append(effect)
        return grouped

    def runnable_decisions(self, policy_name: str | None = None, stale_after_s: float = 60.0) -> list[int]:
        """Decisions with effects to run: planned, or claimed by a runner that is gone from this host
        or claimed longer ago than ``stale_after_s`` (the backend gets the same idempotency key again)."""
        stale = _ago(stale_after_s)
        try:
            with self.session() as session:
                query = select(OutboxEffect.decision_id, OutboxEffect.status, OutboxEffect.claimed_at,
                               OutboxEffect.claimed_by).where(
                    col(OutboxEffect.status).in_(("planned", "running")))
                if policy_name is not None:
                    query = query.where(OutboxEffect.policy_name == policy_name)
                rows = session.exec(query).all()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read the effect outbox: {_short(exc)}", retryable=True) from exc
        return sorted({decision_id for decision_id, status, claimed_at, claimed_by in rows
                       if status == "planned" or (claimed_at or "") < stale or claimer_gone(claimed_by)})

    def claim_effect(self, effect: OutboxEffect, stale_after_s: float = 60.0) -> bool:
        """Move a planned effect, or one whose runner is gone or past its lease, to ``running`` for this
        process; True only for the one caller that did."""
        now = utcnow()
        gone = effect.claimed_by if effect.status == "running" and claimer_gone(effect.claimed_by) else ""
        try:
            with self.engine.begin() as connection:
                updated = connection.execute(
                    text("UPDATE effect SET status='running', claimed_at=:now, claimed_by=:me, updated_at=:now, "
                         "attempts=attempts+1 WHERE id=:id AND (status='planned' OR (status='running' AND "
                         "(claimed_at < :stale OR claimed_by = :gone)))"),
                    {"now": now, "me": runner_identity(), "id": effect.id, "stale": _ago(stale_after_s),
                     "gone": gone})
                claimed = updated.rowcount == 1
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot claim effect {effect.id}: {_short(exc)}", retryable=True) from exc
        if claimed:
            effect.status, effect.claimed_at, effect.claimed_by = "running", now, runner_identity()
            effect.attempts += 1
        return claimed

    def _append(self, row: Any, conversation: Conversation | None, expected_revision: int | None,
                then: Callable[[Session, Any], None] | None = None) -> Any:
        try:
            with self.session() as session:
                # Lock the chain head first: this serializes appends across processes.
                session.execute(text("UPDATE chainhead SET length = length + 1 WHERE id = 1"))
                head = session.get(ChainHead, 1)
                assert head is not None
                if isinstance(row, OperatorAction) and row.decision_id is not None \
                        and row.action in RESOLVING_ACTIONS:
                    done = session.exec(select(OperatorAction).where(
                        OperatorAction.decision_id == row.decision_id,
                        col(OperatorAction.action).in_(RESOLVING_ACTIONS))).first()
                    if done is not None:
                        session.rollback()
                        raise ConversationError(
                            f"decision {row.decision_id} was already handled: {done.action} by {done.operator} "
                            f"at {done.created_at}; refresh to see its state")
                if conversation is not None:
                    expected = conversation.revision if expected_revision is None else expected_revision
                    conversation.revision = expected + 1
                    updated = session.execute(
                        text("UPDATE conversation SET step=:step, status=:status, known_json=:known, turns=:turns, "
                             "metadata_json=:metadata, revision=:rev, updated_at=:now "
                             "WHERE id=:id AND revision=:expected"),
                        {"step": conversation.step, "status": conversation.status,
                         "known": conversation.known_json, "turns": conversation.turns,
                         "metadata": conversation.metadata_json,
                         "rev": conversation.revision, "now": row.created_at, "id": conversation.id,
                         "expected": expected})
                    if getattr(updated, "rowcount", 1) != 1:
                        session.rollback()
                        raise ConversationError(
                            f"conversation {conversation.id} changed while this ran (another turn or operator "
                            "action came first); reload it and try again", retryable=True)
                seal(row, head.last_hash, head.length)
                head.last_hash = row.hash
                session.add(row)
                session.add(head)
                if then is not None:
                    session.flush()  # the row's id, for the rows written with it
                    then(session, row)
                session.commit()
                return row
        except ConversationError:
            raise
        except SQLAlchemyError as exc:
            raise StoreError(f"the audit store could not record this, so no reply was sent: {_short(exc)}",
                             retryable=True) from exc

    def policy_digest_of(self, version: PolicyVersion) -> str:
        """The digest a decision records for this policy version."""
        return policy_digest(version.source_sha256, version.catalog_sha256, version.modules_sha256)

    def verify_chain(self) -> ChainReport:
        """Recompute the whole chain (decisions and operator actions) and the policy snapshots.

        Reads plain tuples in large batches (see :mod:`sopagent.store.verify`); the hashes are the
        ones :mod:`sopagent.store.chain` defines.
        """
        from sopagent.store.verify import verify_engine

        try:
            return verify_engine(self.engine)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read the audit chain: {_short(exc)}", retryable=True) from exc

    def iter_decisions(self, batch: int = 5000) -> Iterator[Decision]:
        """All decisions in chain order, read in batches."""
        yield from self._iter(Decision, batch)

    def iter_actions(self, batch: int = 5000) -> Iterator[OperatorAction]:
        """All operator actions in chain order, read in batches."""
        yield from self._iter(OperatorAction, batch)

    def _iter(self, table: Any, batch: int) -> Iterator[Any]:
        last = -1
        while True:
            with self.session() as session:
                rows = session.exec(select(table).where(table.seq > last).order_by(table.seq).limit(batch)).all()
            if not rows:
                return
            yield from rows
            last = rows[-1].seq


def runner_identity() -> str:
    """``host:pid`` of this process, recorded on the effects it claims."""
    return f"{socket.gethostname()}:{os.getpid()}"


def claimer_gone(claimed_by: str | None) -> bool:
    """True when ``claimed_by`` names a process of this host that no longer runs (it died mid-run)."""
    host, _, pid = (claimed_by or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists but belongs to another user
        return False
    return False


def _ago(seconds: float) -> str:
    """The audit clock's text of ``seconds`` ago (claims older than this are past their lease)."""
    return (dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=seconds)).isoformat(timespec="microseconds")


def idempotency_key(decision: Decision, option_index: int, position: int) -> str:
    """The key a backend receives for one effect: the decision's chain hash, the option, the position."""
    return f"sopa-{decision.hash[:32]}-{option_index}-{position}"


def add_effects(session: Session, decision: Decision, effects: Sequence[OutboxEffect]) -> None:
    """Write a decision's outbox rows inside the transaction that records it (or its resolution)."""
    for effect in effects:
        effect.decision_id = decision.id or 0
        effect.conversation_id = decision.conversation_id
        effect.idempotency_key = idempotency_key(decision, effect.option_index, effect.position)
        session.add(effect)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA secure_delete=ON")  # erased content is overwritten, not left in free pages
    cursor.close()


def _short(exc: BaseException) -> str:
    original = getattr(exc, "orig", None)
    return str(original or exc).splitlines()[0]
