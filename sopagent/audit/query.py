"""Find decisions and operator actions by conversation, customer, policy, response, status, operator, time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import col, select

from sopagent.errors import StoreError
from sopagent.store import Conversation, Decision, OperatorAction, PolicyVersion, Store
from sopagent.store.chain import ChainRow, merge_by_seq


@dataclass(frozen=True)
class AuditFilter:
    """What to select; every field left None matches everything."""

    conversation: str | None = None
    customer: str | None = None
    """Customer reference given when the conversation started."""
    policy: str | None = None
    """Policy name."""
    policy_version: str | None = None
    """The author's version label (e.g. 1.0) or a stored policy version id (e.g. #3)."""
    response: str | None = None
    status: str | None = None
    """Decision status (sent, pending, escalated, received)."""
    operator: str | None = None
    """Operator name: selects that operator's actions and the decisions chosen by them."""
    since: str | None = None
    """ISO 8601 time (UTC when no zone is given), inclusive."""
    until: str | None = None
    """ISO 8601 time, exclusive."""
    kind: str = "all"
    """all, decisions or actions."""
    limit: int | None = None

    def matches_actions(self) -> bool:
        """Whether operator actions can match at all (a decision-only filter excludes them)."""
        return self.kind in ("all", "actions") and self.status is None and self.policy_version is None

    def matches_decisions(self) -> bool:
        """Whether decisions can match at all."""
        return self.kind in ("all", "decisions")


def _conversation_ids(session: Any, flt: AuditFilter) -> Any | None:
    if flt.customer is None and flt.policy is None:
        return None
    query = select(Conversation.id)
    if flt.customer is not None:
        query = query.where(Conversation.customer_ref == flt.customer)
    if flt.policy is not None:
        query = query.where(Conversation.policy_name == flt.policy)
    return query


def _version_ids(flt: AuditFilter) -> Any | None:
    if flt.policy_version is None:
        return None
    label = flt.policy_version
    if label.startswith("#") and label[1:].isdigit():
        return select(PolicyVersion.id).where(PolicyVersion.id == int(label[1:]))
    query = select(PolicyVersion.id).where(PolicyVersion.version == label)
    if flt.policy is not None:
        query = query.where(PolicyVersion.name == flt.policy)
    return query


def _utc(moment: str | None) -> str | None:
    """Normalize to the log's format (UTC ISO 8601) so text comparison orders correctly."""
    if moment is None:
        return None
    import datetime as dt

    try:
        parsed = dt.datetime.fromisoformat(moment)
    except ValueError as exc:
        raise StoreError(f"{moment!r} is not a date or time; use ISO 8601, e.g. 2026-11-23 or "
                         "2026-11-23T14:00") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed.astimezone(dt.timezone.utc).isoformat(timespec="microseconds")


def select_rows(store: Store, flt: AuditFilter) -> list[ChainRow]:
    """Decisions and operator actions matching ``flt``, merged in chain order."""
    since, until = _utc(flt.since), _utc(flt.until)
    try:
        with store.session() as session:
            conversations = _conversation_ids(session, flt)
            decisions: list[Decision] = []
            actions: list[OperatorAction] = []
            if flt.matches_decisions():
                query = select(Decision).order_by(col(Decision.seq))
                if flt.conversation:
                    query = query.where(Decision.conversation_id == flt.conversation)
                if conversations is not None:
                    query = query.where(col(Decision.conversation_id).in_(conversations))
                versions = _version_ids(flt)
                if versions is not None:
                    query = query.where(col(Decision.policy_version_id).in_(versions))
                if flt.response:
                    query = query.where(Decision.response_id == flt.response)
                if flt.status:
                    query = query.where(Decision.status == flt.status)
                if flt.operator:
                    query = query.where(Decision.chosen_by == f"operator:{flt.operator}")
                if since:
                    query = query.where(Decision.created_at >= since)
                if until:
                    query = query.where(Decision.created_at < until)
                if flt.limit:
                    query = query.limit(flt.limit)
                decisions = list(session.exec(query).all())
            if flt.matches_actions():
                action_query = select(OperatorAction).order_by(col(OperatorAction.seq))
                if flt.conversation:
                    action_query = action_query.where(OperatorAction.conversation_id == flt.conversation)
                if conversations is not None:
                    action_query = action_query.where(col(OperatorAction.conversation_id).in_(conversations))
                if flt.response:
                    action_query = action_query.where(OperatorAction.response_id == flt.response)
                if flt.operator:
                    action_query = action_query.where(OperatorAction.operator == flt.operator)
                if since:
                    action_query = action_query.where(OperatorAction.created_at >= since)
                if until:
                    action_query = action_query.where(OperatorAction.created_at < until)
                if flt.limit:
                    action_query = action_query.limit(flt.limit)
                actions = list(session.exec(action_query).all())
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot query the audit log: {str(getattr(exc, 'orig', exc)).splitlines()[0]}",
                         retryable=True) from exc
    rows = list(merge_by_seq(iter(decisions), iter(actions)))
    return rows[:flt.limit] if flt.limit else rows
