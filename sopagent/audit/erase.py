"""Erasure on request and retention: clear personal content, keep the chain verifiable.

A chained operator action (``erase`` or ``purge``) lists in its ``detail_json`` the decisions and
operator actions whose personal fields are cleared; :func:`sopagent.store.chain.verify_rows`
accepts an erased row only when such an action lists it. Cleared: customer text, extracted facts,
options with their bound slot values and planned actions, rendered replies, operator slot values and
sent text (the outcomes of actions included), the arguments, results and errors of the actions in
the effect outbox, the failed checks noted for lockouts, and on the conversations: customer reference,
metadata and known facts. The salt goes too, so the kept
commitment can no longer be tested against guesses. On SQLite the WAL is checkpointed and the file
vacuumed afterwards (secure_delete is on), so no trace of the text remains in the database file; on
PostgreSQL the cleared tables are rewritten with ``VACUUM (FULL)``, so no dead row version keeps it.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import col, select

from sopagent.errors import ConversationError, StoreError
from sopagent.store import Conversation, Decision, OperatorAction, Store, utcnow

ERASING_ACTIONS = ("erase", "purge")


@dataclass
class ErasureResult:
    """What an erase or purge cleared."""

    action_id: int | None
    conversations: list[str] = field(default_factory=list)
    decisions: list[int] = field(default_factory=list)
    actions: list[int] = field(default_factory=list)

    def describe(self) -> str:
        """One line for people."""
        if self.action_id is None:
            return "nothing to clear"
        return (f"cleared personal content of {len(self.decisions)} decisions, {len(self.actions)} operator "
                f"actions and {len(self.conversations)} conversations (recorded as operator action "
                f"{self.action_id})")


def erase_customer(store: Store, customer_ref: str, operator: str, reason: str) -> ErasureResult:
    """Erase one customer's personal data from every one of their conversations."""
    _require(operator, reason)
    with store.session() as session:
        conversations = list(session.exec(select(Conversation.id).where(
            Conversation.customer_ref == customer_ref)).all())
    if not conversations:
        raise ConversationError(f"no conversation has customer reference {customer_ref!r}; check the reference "
                                "with `sopagent audit list --customer REF` (it may already be erased)")
    with store.session() as session:
        decisions = [i for i in session.exec(select(Decision.id).where(
            col(Decision.conversation_id).in_(conversations), col(Decision.erased_at).is_(None))).all() if i]
        actions = [i for i in session.exec(select(OperatorAction.id).where(
            col(OperatorAction.conversation_id).in_(conversations), col(OperatorAction.erased_at).is_(None),
            col(OperatorAction.action).not_in(ERASING_ACTIONS))).all() if i]
    return _clear(store, "erase", operator, reason, conversations, decisions, actions)


def purge_older_than(store: Store, days: int, operator: str, reason: str = "") -> ErasureResult:
    """Retention: clear personal content recorded more than ``days`` days ago (and of conversations idle as long)."""
    if days < 0:
        raise ConversationError("--older-than-days must be 0 or more")
    _require(operator, reason or "retention")
    cutoff = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=days)).isoformat(timespec="microseconds")
    with store.session() as session:
        conversations = list(session.exec(select(Conversation.id).where(
            Conversation.updated_at < cutoff, col(Conversation.erased_at).is_(None))).all())
        decisions = [i for i in session.exec(select(Decision.id).where(
            Decision.created_at < cutoff, col(Decision.erased_at).is_(None))).all() if i]
        actions = [i for i in session.exec(select(OperatorAction.id).where(
            OperatorAction.created_at < cutoff, col(OperatorAction.erased_at).is_(None),
            col(OperatorAction.action).not_in(ERASING_ACTIONS))).all() if i]
    return _clear(store, "purge", operator, reason or f"retention: older than {days} days", conversations,
                  decisions, actions)


def _require(operator: str, reason: str) -> None:
    if not operator or not operator.strip():
        raise ConversationError("an operator name is required; pass --operator NAME")
    if not reason or not reason.strip():
        raise ConversationError("a reason is required for the audit log; pass --reason TEXT "
                                "(e.g. a ticket number; no personal data)")


def _clear(store: Store, kind: str, operator: str, reason: str, conversations: list[str], decisions: list[int],
           actions: list[int]) -> ErasureResult:
    if not (conversations or decisions or actions):
        return ErasureResult(None)
    detail: dict[str, list[Any]] = {"conversations": sorted(conversations), "decisions": sorted(decisions),
                                    "actions": sorted(actions)}
    # First the chained record of what will be cleared: the chain then accepts these rows as erased.
    action = store.append_action(OperatorAction(operator=operator.strip(), action=kind, reason=reason.strip(),
                                                detail_json=json.dumps(detail, sort_keys=True), created_at=utcnow()))
    now = utcnow()
    try:
        with store.engine.begin() as conn:
            for chunk in _chunks(decisions):
                conn.execute(text(
                    "UPDATE decision SET customer_text=NULL, facts_json=NULL, options_json=NULL, reply_text=NULL, "
                    f"sent_text=NULL, salt=NULL, erased_at=:now WHERE id IN ({', '.join(map(str, chunk))})"),
                    {"now": now})
            for chunk in _chunks(actions):
                conn.execute(text(
                    "UPDATE operatoraction SET slots_json=NULL, sent_text=NULL, salt=NULL, erased_at=:now "
                    f"WHERE id IN ({', '.join(map(str, chunk))})"), {"now": now})
            for chunk in _chunks(decisions):
                conn.execute(text(
                    "UPDATE effect SET arguments_json=NULL, result_json=NULL, error=NULL, erased_at=:now "
                    f"WHERE decision_id IN ({', '.join(map(str, chunk))})"), {"now": now})
                conn.execute(text(f"DELETE FROM failedcheck WHERE decision_id IN ({', '.join(map(str, chunk))})"))
            for chunk in _chunks(conversations):
                conn.execute(text(
                    "UPDATE conversation SET customer_ref=NULL, metadata_json='{}', known_json='{}', erased_at=:now "
                    "WHERE id IN (" + ", ".join(f":c{i}" for i in range(len(chunk))) + ")"),
                    {"now": now, **{f"c{i}": cid for i, cid in enumerate(chunk)}})
    except SQLAlchemyError as exc:
        raise StoreError(f"the {kind} action {action.id} was recorded but clearing failed: {exc}; run the same "
                         "command again to finish", retryable=True) from exc
    compact(store)
    return ErasureResult(action.id, detail["conversations"], detail["decisions"], detail["actions"])


CLEARED_TABLES = ("decision", "operatoraction", "conversation", "effect")
"""The tables whose rows an erase or purge rewrites."""


def compact(store: Store) -> None:
    """Remove what is left of cleared content from the database files.

    SQLite: checkpoint the WAL and VACUUM the file. PostgreSQL: ``VACUUM (FULL)`` the cleared
    tables (outside a transaction), which writes them and their indexes anew without the dead row
    versions that still hold the old text; it locks those tables while it runs, so appends wait.
    Other engines: nothing (their own vacuuming applies).
    """
    if store.engine.dialect.name == "postgresql":
        try:
            with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql(f"VACUUM (FULL) {', '.join(CLEARED_TABLES)}")
        except SQLAlchemyError as exc:
            raise StoreError(f"the content was cleared, but VACUUM (FULL) failed: {exc}; old row versions stay "
                             f"in the table files until it runs: run `VACUUM (FULL) {', '.join(CLEARED_TABLES)}` "
                             "as the table owner", retryable=True) from exc
        return
    if not store.url.startswith("sqlite"):
        return
    store.engine.dispose()  # no pooled connection may hold a read snapshot during the checkpoint
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.exec_driver_sql("VACUUM")
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    store.engine.dispose()


def _chunks(ids: list[Any], size: int = 500) -> list[list[Any]]:
    return [ids[i:i + size] for i in range(0, len(ids), size)]
