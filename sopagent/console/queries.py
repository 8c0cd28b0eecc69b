"""Read-side SQL for the operator console: few queries, aggregates in SQL, bounded row counts.

Every function takes a :class:`~sopagent.store.Store` and returns plain frozen dataclasses, so the
UI never holds ORM sessions. They run in worker threads, never on the UI loop. Errors from the
database become :class:`~sopagent.errors.StoreError` with a message that says what to do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.exc import SQLAlchemyError

from sopagent.effects import describe, shown_slots
from sopagent.errors import ConversationError, StoreError
from sopagent.status import Status
from sopagent.store import RESOLVING_ACTIONS, Conversation, Decision, OperatorAction, OutboxEffect, PolicyVersion, Store

T = TypeVar("T")
QUEUE_LIMIT = 200
"""Pending decisions shown in the approval queue at most (oldest first)."""
LIST_PAGE = 50
"""Conversations the list reads at first (newest activity first); moving to its last row reads the next page."""
AUDIT_LIMIT = 500
"""Decisions shown in the audit view at most (newest first)."""


def _read(what: str, run: Callable[[], T]) -> T:
    try:
        return run()
    except SQLAlchemyError as exc:
        original = getattr(exc, "orig", None) or exc
        first = str(original).splitlines()[0]
        hint = ("another process holds a write lock; it clears by itself, retry shortly"
                if "locked" in first else "check --db and that the database is reachable")
        raise StoreError(f"cannot read {what}: {first}", fix=hint, retryable=True) from exc


def _unresolved() -> Any:
    """SQL condition: no resolving operator action exists for ``Decision.id``."""
    return ~exists().where(OperatorAction.decision_id == Decision.id,
                           OperatorAction.action.in_(RESOLVING_ACTIONS))  # type: ignore[attr-defined]


# --- the conversation list -------------------------------------------------------------------

@dataclass(frozen=True)
class ConversationRow:
    """One line of the conversation list."""

    id: str
    customer_ref: str
    policy_name: str
    step: str
    status: str
    pending: int
    turns: int
    updated_at: str


@dataclass(frozen=True)
class ConversationPage:
    """The visible part of the list and how many conversations match in all."""

    rows: list[ConversationRow]
    total: int


def conversation_page(store: Store, search: str = "", status: str = "", limit: int = LIST_PAGE) -> ConversationPage:
    """Conversations by latest activity, with their unresolved pending counts aggregated in SQL.

    ``search`` matches the id, customer reference, policy or step (case-insensitive substring);
    ``status`` keeps one status (``pending`` keeps conversations with something to approve).
    """
    pending = (select(func.count()).select_from(Decision)
               .where(Decision.conversation_id == Conversation.id, Decision.status == Status.PENDING.value,
                      _unresolved())
               .correlate(Conversation).scalar_subquery())
    conditions: list[Any] = []
    if search.strip():
        like = f"%{search.strip().lower()}%"
        conditions.append(or_(func.lower(Conversation.id).like(like),
                              func.lower(func.coalesce(Conversation.customer_ref, "")).like(like),
                              func.lower(Conversation.policy_name).like(like),
                              func.lower(Conversation.step).like(like)))
    if status == "pending":
        conditions.append(Conversation.status == "awaiting_approval")
    elif status:
        conditions.append(Conversation.status == status)
    where = and_(True, *conditions)
    query = (select(Conversation.id, Conversation.customer_ref, Conversation.policy_name, Conversation.step,
                    Conversation.status, pending.label("pending"), Conversation.turns, Conversation.updated_at)
             .where(where).order_by(Conversation.updated_at.desc(), Conversation.id).limit(limit))  # type: ignore

    def run() -> ConversationPage:
        with store.engine.connect() as conn:
            rows = [ConversationRow(r.id, r.customer_ref or "", r.policy_name, r.step, r.status, int(r.pending),
                                    r.turns, r.updated_at) for r in conn.execute(query)]
            total = len(rows) if len(rows) < limit else int(
                conn.execute(select(func.count()).select_from(Conversation).where(where)).scalar_one())
        return ConversationPage(rows, total)

    return _read("the conversation list", run)


# --- one conversation --------------------------------------------------------------------------

@dataclass(frozen=True)
class OptionLine:
    """An allowed option of a decision."""

    index: int
    response_id: str
    next_step: str
    slots: dict[str, Any]
    probability: float | None
    effects: list[str] = field(default_factory=list)
    """The actions this option would take, as ``name(arg=value, ...)``."""


@dataclass(frozen=True)
class EffectLine:
    """One of a decision's actions as it stands in the outbox."""

    what: str
    """``name(arg=value, ...)`` (``name(erased)`` once erased)."""
    status: str
    """held (waits for approval), planned, running, done, failed or cancelled."""
    result: str | None
    error: str | None
    irreversible: bool


@dataclass(frozen=True)
class Entry:
    """One item of a transcript: an agent turn (decision) or an operator action."""

    kind: str
    """decision or action."""
    id: int
    seq: int
    created_at: str
    customer_text: str | None = None
    sent_text: str | None = None
    # decision detail
    step: str = ""
    next_step: str = ""
    status: str = ""
    facts: dict[str, Any] = field(default_factory=dict)
    options: list[OptionLine] = field(default_factory=list)
    chosen_index: int | None = None
    chosen_by: str = ""
    confidence: float | None = None
    response_id: str | None = None
    reply_text: str | None = None
    model_name: str = ""
    error: str | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    resolved_by: str | None = None
    """For a pending decision: "approve by ana", "override by ana"...; None while it waits."""
    effects: list[EffectLine] = field(default_factory=list)
    """The decision's actions and where they stand (held until an operator approves)."""
    # action detail
    operator: str = ""
    action: str = ""
    reason: str = ""


@dataclass(frozen=True)
class ConversationDetail:
    """A conversation's state, its policy version and its transcript in chain order."""

    id: str
    customer_ref: str
    policy_name: str
    policy_version: str
    policy_version_id: int
    step: str
    status: str
    turns: int
    updated_at: str
    entries: list[Entry]

    @property
    def open_decisions(self) -> list[Entry]:
        """Decisions still waiting for an operator."""
        return [e for e in self.entries if e.kind == "decision" and e.status == Status.PENDING and not e.resolved_by]


def _options(options_json: str | None) -> list[OptionLine]:
    raw = json.loads(options_json or "[]")
    return [OptionLine(i, o.get("response_id", "?"), o.get("next_step", ""),
                       shown_slots(o.get("slots") or {}, o.get("effects") or []), o.get("probability"),
                       [describe(e["name"], e.get("arguments") or {}) for e in o.get("effects") or []])
            for i, o in enumerate(raw)]


def effect_line(effect: OutboxEffect) -> EffectLine:
    """An outbox row as the console shows it."""
    arguments = json.loads(effect.arguments_json) if effect.arguments_json is not None else None
    what = describe(effect.name, arguments) if arguments is not None else f"{effect.name}(erased)"
    return EffectLine(what, effect.status, effect.result_json, effect.error, effect.irreversible)


def effects_by_decision(session: Any, decision_ids: list[int]) -> dict[int, list[EffectLine]]:
    """The outbox rows of these decisions, in order, as console lines."""
    if not decision_ids:
        return {}
    rows = session.execute(select(OutboxEffect).where(OutboxEffect.decision_id.in_(decision_ids))  # type: ignore[attr-defined]
                           .order_by(OutboxEffect.decision_id, OutboxEffect.option_index,
                                     OutboxEffect.position)).scalars().all()
    out: dict[int, list[EffectLine]] = {}
    for effect in rows:
        out.setdefault(effect.decision_id, []).append(effect_line(effect))
    return out


def decision_entry(d: Decision, resolved_by: str | None = None, effects: list[EffectLine] | None = None) -> Entry:
    """A decision row as a transcript entry."""
    return Entry(kind="decision", id=d.id or 0, seq=d.seq, created_at=d.created_at, customer_text=d.customer_text,
                 sent_text=d.sent_text, step=d.step, next_step=d.next_step, status=d.status,
                 facts=json.loads(d.facts_json or "{}"), options=_options(d.options_json),
                 chosen_index=d.chosen_index, chosen_by=d.chosen_by, confidence=d.confidence,
                 response_id=d.response_id, reply_text=d.reply_text, model_name=d.model_name, error=d.error,
                 latency_ms=json.loads(d.latency_json or "{}"), resolved_by=resolved_by, effects=effects or [])


def action_entry(a: OperatorAction) -> Entry:
    """An operator action row as a transcript entry."""
    return Entry(kind="action", id=a.id or 0, seq=a.seq, created_at=a.created_at, sent_text=a.sent_text,
                 operator=a.operator, action=a.action, reason=a.reason, response_id=a.response_id,
                 next_step=a.next_step or "")


def conversation_detail(store: Store, conversation_id: str) -> ConversationDetail:
    """Load one conversation with its transcript; :class:`ConversationError` if it no longer exists."""

    def run() -> ConversationDetail:
        with store.session() as session:
            conversation = session.get(Conversation, conversation_id)
            if conversation is None:
                raise ConversationError(f"conversation {conversation_id} no longer exists (deleted meanwhile?); "
                                        "it was removed from the list")
            version = session.get(PolicyVersion, conversation.policy_version_id)
            decisions = session.execute(select(Decision).where(
                Decision.conversation_id == conversation_id).order_by(Decision.seq)).scalars().all()
            actions = session.execute(select(OperatorAction).where(
                OperatorAction.conversation_id == conversation_id).order_by(OperatorAction.seq)).scalars().all()
            effects = effects_by_decision(session, [d.id for d in decisions])
        resolutions = {a.decision_id: f"{a.action} by {a.operator}" for a in actions
                       if a.decision_id is not None and a.action in RESOLVING_ACTIONS}
        entries = [decision_entry(d, resolutions.get(d.id), effects.get(d.id or 0)) for d in decisions] \
            + [action_entry(a) for a in actions]
        entries.sort(key=lambda e: e.seq)
        return ConversationDetail(conversation.id, conversation.customer_ref or "", conversation.policy_name,
                                  version.version if version else "?", conversation.policy_version_id,
                                  conversation.step, conversation.status, conversation.turns,
                                  conversation.updated_at, entries)

    return _read(f"conversation {conversation_id}", run)


# --- the approval queue ------------------------------------------------------------------------

@dataclass(frozen=True)
class PendingRow:
    """A decision waiting for an operator, with its conversation's customer reference."""

    decision: Entry
    conversation_id: str
    customer_ref: str
    policy_name: str


def approval_queue(store: Store, limit: int = QUEUE_LIMIT) -> list[PendingRow]:
    """Unresolved pending decisions, oldest first (the order a queue is worked in)."""
    query = (select(Decision, Conversation.customer_ref, Conversation.policy_name)
             .join(Conversation, Conversation.id == Decision.conversation_id)
             .where(Decision.status == Status.PENDING.value, _unresolved()).order_by(Decision.seq).limit(limit))

    def run() -> list[PendingRow]:
        with store.session() as session:
            found = session.execute(query).all()
            effects = effects_by_decision(session, [d.id for d, _, _ in found])
            return [PendingRow(decision_entry(d, effects=effects.get(d.id or 0)), d.conversation_id, ref or "", policy)
                    for d, ref, policy in found]

    return _read("the approval queue", run)


# --- the audit view ----------------------------------------------------------------------------

@dataclass(frozen=True)
class AuditFilter:
    """What the audit view narrows to; empty fields do not filter."""

    conversation: str = ""
    policy: str = ""
    response: str = ""
    status: str = ""
    operator: str = ""
    since: str = ""
    """ISO 8601 prefix, e.g. 2026-11-23 or 2026-11-23T10:00 (compared as text, UTC)."""
    until: str = ""


@dataclass(frozen=True)
class AuditRow:
    """One decision in the audit view."""

    id: int
    seq: int
    created_at: str
    conversation_id: str
    policy_name: str
    step: str
    response_id: str
    status: str
    chosen_by: str
    handled_by: str


def audit_rows(store: Store, filters: AuditFilter, limit: int = AUDIT_LIMIT) -> list[AuditRow]:
    """Decisions matching ``filters``, newest first; "operator" matches who resolved or chose it."""
    handled = (select(func.max(OperatorAction.action + " by " + OperatorAction.operator))
               .where(OperatorAction.decision_id == Decision.id,
                      OperatorAction.action.in_(RESOLVING_ACTIONS))  # type: ignore[attr-defined]
               .correlate(Decision).scalar_subquery())
    conditions: list[Any] = []
    if filters.conversation:
        conditions.append(Decision.conversation_id.startswith(filters.conversation))
    if filters.policy:
        conditions.append(Conversation.policy_name == filters.policy)
    if filters.response:
        conditions.append(Decision.response_id == filters.response)
    if filters.status:
        conditions.append(Decision.status == filters.status)
    if filters.operator:
        conditions.append(or_(Decision.chosen_by == f"operator:{filters.operator}", exists().where(
            OperatorAction.decision_id == Decision.id, OperatorAction.operator == filters.operator)))
    if filters.since:
        conditions.append(Decision.created_at >= filters.since)
    if filters.until:
        conditions.append(Decision.created_at < filters.until + "\uffff")
    query = (select(Decision.id, Decision.seq, Decision.created_at, Decision.conversation_id,
                    Conversation.policy_name, Decision.step, Decision.response_id, Decision.status,
                    Decision.chosen_by, handled.label("handled"))
             .join(Conversation, Conversation.id == Decision.conversation_id)
             .where(and_(True, *conditions)).order_by(Decision.seq.desc()).limit(limit))  # type: ignore

    def run() -> list[AuditRow]:
        with store.engine.connect() as conn:
            return [AuditRow(r.id, r.seq, r.created_at, r.conversation_id, r.policy_name, r.step,
                             r.response_id or "", r.status, r.chosen_by, r.handled or "")
                    for r in conn.execute(query)]

    return _read("the audit log", run)
