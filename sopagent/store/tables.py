"""The audit store's tables (SQLModel): policy versions, conversations, decisions, operator actions.

Decisions and operator actions form one hash chain, ordered by ``seq``. Each chained row splits its
content in two: public fields (hashed as they are) and personal fields (customer text, facts, slot
values, rendered replies), which enter the hash only through a salted ``commitment``. Erasing a
customer's data clears the personal fields and the salt but keeps the commitment, so the chain
still verifies while nothing of the text remains.
"""

from __future__ import annotations

import datetime as dt
import json

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

GENESIS_HASH = "0" * 64


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
    modules_json: str = "{}"
    """Helper modules the policy imports from beside it: {"origin": folder, "modules": {name: {path, source}}}."""
    modules_sha256: str = ""
    """sha256 over the helper modules' sources (empty when the policy imports none)."""
    created_at: str = Field(default_factory=utcnow)


class Conversation(SQLModel, table=True):
    """One customer conversation and its current state (mutable; the chain holds the history)."""

    id: str = Field(primary_key=True)
    policy_name: str = Field(index=True)
    policy_version_id: int = Field(foreign_key="policyversion.id")
    customer_ref: str | None = Field(default=None, index=True)
    metadata_json: str = "{}"
    step: str
    status: str = Field(default="active", index=True)
    """active, awaiting_approval, paused, taken_over, escalated or closed."""
    known_json: str = "{}"
    turns: int = 0
    revision: int = 0
    """Bumped by every committed turn or operator action: two changes from one state cannot both commit."""
    created_at: str = Field(default_factory=utcnow)
    updated_at: str = Field(default_factory=utcnow, index=True)
    erased_at: str | None = None

    def language(self) -> str | None:
        """The language its replies are sent in (``metadata["language"]``); None: the catalog's first."""
        value = json.loads(self.metadata_json or "{}").get(LANGUAGE_KEY)
        return value if isinstance(value, str) else None


LANGUAGE_KEY = "language"
"""The conversation metadata key that holds its language (set at start, or read from the first message)."""


class Decision(SQLModel, table=True):
    """One agent turn: what was read, what was allowed, what was chosen and said, and how long it took."""

    id: int | None = Field(default=None, primary_key=True)
    seq: int = Field(default=0, index=True, unique=True)
    """Position in the audit chain (shared with operator actions), from 1."""
    conversation_id: str = Field(foreign_key="conversation.id", index=True)
    turn: int
    created_at: str = Field(default_factory=utcnow, index=True)
    policy_version_id: int = Field(foreign_key="policyversion.id", index=True)
    policy_sha256: str = ""
    """sha256 over the policy version's source and catalog hashes: ties the decision to the snapshot."""
    model_name: str
    step: str
    chosen_index: int | None = None
    response_id: str | None = Field(default=None, index=True)
    chosen_by: str
    """A :class:`~sopagent.status.ChosenBy`: policy (a single allowed option), model, fallback or none."""
    confidence: float | None = None
    status: str = Field(index=True)
    """A :class:`~sopagent.status.Status`: sent, pending, escalated or received (recorded while an
    operator has the conversation)."""
    next_step: str
    error: str | None = None
    latency_json: str = "{}"
    # personal content: hashed through the commitment only
    customer_text: str | None = None
    facts_json: str | None = None
    options_json: str | None = None
    """Every allowed option: response id, bound slots, next step, probability."""
    reply_text: str | None = None
    """The rendered chosen reply (for a pending decision: what waits for approval)."""
    sent_text: str | None = None
    """What the customer actually received at this turn (for a pending decision: the holding reply)."""
    salt: str | None = None
    commitment: str = ""
    erased_at: str | None = None
    prev_hash: str = ""
    hash: str = Field(default="", index=True)


class OperatorAction(SQLModel, table=True):
    """Something a person did: approve, override, escalate, take over, reply, hand back, pause, erase."""

    id: int | None = Field(default=None, primary_key=True)
    seq: int = Field(default=0, index=True, unique=True)
    created_at: str = Field(default_factory=utcnow, index=True)
    operator: str = Field(index=True)
    action: str = Field(index=True)
    """approve, override, escalate, take_over, operator_reply, hand_back, pause, resume, erase or purge."""
    conversation_id: str | None = Field(default=None, index=True)
    decision_id: int | None = Field(default=None, index=True)
    """The decision this action resolves (approve / override / escalate)."""
    reason: str = ""
    response_id: str | None = None
    next_step: str | None = None
    detail_json: str = "{}"
    """Public detail (for erase and purge: the rows whose personal content was cleared)."""
    # personal content: hashed through the commitment only
    slots_json: str | None = None
    sent_text: str | None = None
    """What the customer received because of this action, if anything."""
    salt: str | None = None
    commitment: str = ""
    erased_at: str | None = None
    prev_hash: str = ""
    hash: str = Field(default="", index=True)


class ChainHead(SQLModel, table=True):
    """A single row: the last chain hash and length. Updating it first serializes appends across processes."""

    id: int = Field(default=1, primary_key=True)
    last_hash: str = GENESIS_HASH
    length: int = 0


class OutboxEffect(SQLModel, table=True):
    """The outbox: one backend action a decision planned (a :class:`sopagent.effects.Effect`), and
    where it stands.

    Written in the same transaction as its decision (or as the operator action that chose it), run
    after that commit by the effect runner (:mod:`sopagent.outbox`), once: a runner claims a row by
    moving it to ``running`` in one conditional update. Its outcome is appended to the audit chain
    (an ``effects`` action); this row is the queue's working copy.
    """

    __tablename__ = "effect"

    id: int | None = Field(default=None, primary_key=True)
    decision_id: int = Field(foreign_key="decision.id", index=True)
    conversation_id: str = Field(index=True)
    policy_name: str = Field(index=True)
    option_index: int
    """Which of the decision's options planned it (an override runs another option's effects)."""
    position: int
    """Its place among the option's effects (they run in order)."""
    name: str
    irreversible: bool = False
    idempotency_key: str = Field(unique=True)
    """Derived from the decision's chain hash, the option and the position; passed to the backend."""
    status: str = Field(default="planned", index=True)
    """held (waits for approval), planned (to run), running (claimed by a runner), done, failed or
    cancelled."""
    attempts: int = 0
    claimed_at: str | None = None
    claimed_by: str | None = None
    """``host:pid`` of the runner that claimed it: a claim of a process gone from this host is taken
    over at once, any other after the lease."""
    created_at: str = Field(default_factory=utcnow)
    updated_at: str = Field(default_factory=utcnow)
    outcome_action_id: int | None = None
    """The chained ``effects`` action that recorded its outcome."""
    # personal content: cleared by erasure (the chain holds it under a commitment)
    arguments_json: str | None = "{}"
    result_json: str | None = None
    error: str | None = None
    erased_at: str | None = None


class RequestKey(SQLModel, table=True):
    """A client's idempotency key for one customer message (HTTP ``Idempotency-Key``).

    Written in the transaction that records the message's decision, so a retried request finds the
    decision it already produced and gets the recorded answer: the turn, and its actions, run once.
    """

    __table_args__ = (UniqueConstraint("conversation_id", "key"),)

    id: int | None = Field(default=None, primary_key=True)
    conversation_id: str = Field(index=True)
    key: str
    decision_id: int = Field(foreign_key="decision.id")
    created_at: str = Field(default_factory=utcnow)


class FailedCheck(SQLModel, table=True):
    """A check a step made that failed for a subject (an identity check for a card), recorded with the
    decision, so a policy can lock a subject out across conversations (:meth:`Turn.recent_failures`).

    The subject is stored only as a keyed digest (:func:`sopagent.store.store.subject_digest`).
    """

    id: int | None = Field(default=None, primary_key=True)
    policy_name: str = Field(index=True)
    check: str
    subject_digest: str = Field(index=True)
    decision_id: int = Field(foreign_key="decision.id")
    created_at: str = Field(default_factory=utcnow, index=True)
