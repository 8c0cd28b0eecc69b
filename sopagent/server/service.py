"""What the routes share: the store, one Agent per policy (stateless), locks and the model queue."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from sqlalchemy import text as sql
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import col, select

from sopagent.compose import build_agent, open_store
from sopagent.engine import Agent, TurnResult
from sopagent.errors import ConversationError, SopAgentError, StoreError
from sopagent.models.base import DecisionModel
from sopagent.policy import Policy, load_policy
from sopagent.server.config import ServeConfig
from sopagent.server.keys import (
    ApiKey,
    ConversationOwner,
    claim_conversation,
    ensure_table,
    issue_conversation_key,
    may_reach,
    owner_of,
    owners_of,
)
from sopagent.server.limits import Limits
from sopagent.server.runtime import ConversationLocks, QueuedModel, TurnAdmission, notify_webhook
from sopagent.settings import Settings
from sopagent.store import LANGUAGE_KEY, Conversation, Decision

log = logging.getLogger("sopagent.server")


class ApiProblem(Exception):
    """An HTTP error with a message saying what is wrong and how to fix it."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(message)


def error_kind(error: str | None) -> str | None:
    """The kind of a recorded error, without its details: ``ModelError`` of ``ModelError: ...``."""
    return error.split(":", 1)[0].strip() if error else None


class Service:
    """The service's per-process parts; holds no conversation state."""

    def __init__(self, config: ServeConfig, model: DecisionModel, settings: Settings | None = None) -> None:
        self.config = config
        settings = settings if settings is not None else config.settings()
        self.store = open_store(settings)
        ensure_table(self.store)
        self.model = QueuedModel(model, config.model_timeout_s)
        self.locks = ConversationLocks(self.store.url)
        self.admission = TurnAdmission(config.turns_in_flight, config.turn_wait_s)
        self.limits = Limits(config.rate_limit, config.failed_auth_limit, config.long_polls_per_key)
        self.started = int(time.time())
        """When this process started serving (the ``created`` of the policies listed as models)."""
        self.agents: dict[str, Agent] = {}
        for path in config.policies:
            policy: Policy = load_policy(path)
            self.agents[policy.name] = build_agent(policy, settings, model=self.model, store=self.store)

    def agent(self, policy_name: str) -> Agent:
        """The agent for a policy name, or 404 listing the served policies."""
        agent = self.agents.get(policy_name)
        if agent is None:
            raise ApiProblem(404, f"unknown policy {policy_name!r}; this server runs: {', '.join(sorted(self.agents))}")
        return agent

    def conversation(self, conversation_id: str) -> Conversation:
        """Load a conversation, or 404."""
        try:
            return self.store.get_conversation(conversation_id)
        except ConversationError as exc:
            raise ApiProblem(404, str(exc)) from exc

    def owned_conversation(self, conversation_id: str, key: ApiKey) -> Conversation:
        """A conversation ``key`` may reach (its tenant's; a conversation key's own), or 404: another's is
        answered as unknown."""
        if not may_reach(key, owner_of(self.store, conversation_id)):
            raise ApiProblem(404, f"unknown conversation {conversation_id!r}")
        return self.conversation(conversation_id)

    def owned_decision(self, decision_id: int, key: ApiKey) -> Decision:
        """A decision of a conversation ``key`` may reach, or 404."""
        decision = self.decision(decision_id)
        if not may_reach(key, owner_of(self.store, decision.conversation_id)):
            raise ApiProblem(404, f"unknown decision {decision_id}")
        return decision

    def start(self, policy_name: str, customer_ref: str | None, metadata: dict[str, Any], key: ApiKey,
              language: str | None = None) -> str:
        """Open a conversation for ``key``'s tenant; return its id."""
        conversation_id = self._start(policy_name, customer_ref, metadata, language)
        claim_conversation(self.store, conversation_id, key)
        return conversation_id

    def start_for_browser(self, policy_name: str, key: ApiKey, language: str | None = None) -> tuple[str, str]:
        """Open a conversation for a web-chat visitor (a ``browser`` key); return its id and the new key that
        reaches it alone."""
        conversation_id = self._start(policy_name, None, {"channel": "web-chat"}, language)
        return conversation_id, issue_conversation_key(self.store, conversation_id, key)

    def _start(self, policy_name: str, customer_ref: str | None, metadata: dict[str, Any],
               language: str | None) -> str:
        agent = self.agent(policy_name)
        if LANGUAGE_KEY in metadata:
            raise ApiProblem(422, f"metadata key {LANGUAGE_KEY!r} is the conversation's language; send it as "
                                  "`language`")
        try:
            return agent.start(customer_ref=customer_ref, metadata=metadata, language=language)
        except ConversationError as exc:
            raise ApiProblem(422, str(exc)) from exc

    def tenant_pending(self, key: ApiKey) -> list[Decision]:
        """Decisions waiting for an operator in ``key``'s tenant's conversations, oldest first."""
        pending = self.store.pending_decisions()
        owners = owners_of(self.store, {d.conversation_id for d in pending})
        return [d for d in pending if owners.get(d.conversation_id) == key.tenant]

    def turn(self, conversation_id: str, text: str, request_key: str | None = None) -> TurnResult:
        """One customer turn, serialized with the conversation's other turns across processes.

        With ``request_key`` (the client's ``Idempotency-Key``) a retried request gets the answer the
        first one recorded; nothing runs twice."""
        if len(text) > self.config.max_message_chars:
            raise ApiProblem(422, f"the message has {len(text)} characters; the limit is "
                                  f"{self.config.max_message_chars}: split it or shorten it")
        if not text.strip():
            raise ApiProblem(422, "the message is empty or only whitespace; send the customer's words")
        if "\x00" in text:
            raise ApiProblem(422, "the message contains a NUL character; send plain text")
        conversation = self.conversation(conversation_id)
        agent = self.agents.get(conversation.policy_name)
        if agent is None:
            raise ApiProblem(409, f"conversation {conversation_id} runs policy {conversation.policy_name!r}, "
                                  f"which this server does not serve; start it with that policy file")
        if conversation.status == "closed" and request_key is None:
            raise ApiProblem(409, f"conversation {conversation_id} is closed; start a new one")
        with self.admission.slot(), self.locks.hold(conversation_id):
            try:
                result = agent.respond(conversation_id, text, request_key)
            except ConversationError as exc:
                raise ApiProblem(409, str(exc)) from exc
        return result

    def prepare_next(self, conversation_id: str) -> None:
        """After a reply went out: the model evaluates the conversation so far while the customer types,
        when it has nothing else queued (:meth:`Agent.prepare_next`); failures are only logged."""
        try:
            conversation = self.store.get_conversation(conversation_id)
            agent = self.agents.get(conversation.policy_name)
            if agent is not None:
                agent.prepare_next(conversation_id)
        except (SopAgentError, ConversationError) as exc:
            log.warning("preparing the next turn of %s failed: %s", conversation_id, exc)

    def checkpoint_if_due(self) -> None:
        """Write a signed checkpoint once the chain has grown by ``checkpoint_every`` records (run after a
        response is sent; a failure is logged, never lost silently, and the next call tries again)."""
        config = self.config
        if not (config.anchor_key and config.checkpoint_dir):
            return
        from sopagent.audit.anchor import records_since_checkpoint, write_checkpoint

        try:
            if records_since_checkpoint(self.store, config.checkpoint_dir) >= config.checkpoint_every:
                write_checkpoint(self.store, config.anchor_key, config.checkpoint_dir)
        except (SopAgentError, OSError) as exc:
            log.error("cannot write an audit checkpoint to %s: %s", config.checkpoint_dir, exc)

    def escalated(self, conversation_id: str, decision_id: int | None, by: str, error: str | None) -> None:
        """Tell the configured webhook. Only ids and the kind of failure are sent (``ModelError``, not its
        message, which may quote what a customer wrote); the receiver reads details through the API."""
        if self.config.webhook_url:
            notify_webhook(self.config.webhook_url, {
                "event": "conversation.escalated", "conversation_id": conversation_id,
                "decision_id": decision_id, "by": by, "error": error_kind(error)})

    def open_conversation_of(self, policy_name: str, customer_ref: str, key: ApiKey) -> str | None:
        """The newest conversation of this customer of ``key``'s tenant under this policy that is not closed."""
        try:
            with self.store.session() as session:
                found = session.exec(select(Conversation).join(
                    ConversationOwner, col(ConversationOwner.conversation_id) == col(Conversation.id)).where(
                    ConversationOwner.tenant == key.tenant,
                    Conversation.policy_name == policy_name, Conversation.customer_ref == customer_ref,
                    Conversation.status != "closed").order_by(col(Conversation.created_at).desc())).first()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read conversations: {type(exc).__name__}", retryable=True) from exc
        return found.id if found else None

    def decision(self, decision_id: int) -> Decision:
        """A decision by id, or 404."""
        try:
            with self.store.session() as session:
                found = session.get(Decision, decision_id)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read decision {decision_id}: {type(exc).__name__}", retryable=True) from exc
        if found is None:
            raise ApiProblem(404, f"unknown decision {decision_id}")
        return found

    def run_effects(self, decision: Decision) -> str | None:
        """Run the actions an operator released for ``decision`` with its policy's backend; return the
        reply they filled (or the fallback when one failed), or None when this server does not serve
        the policy or another runner has them."""
        conversation = self.conversation(decision.conversation_id)
        agent = self.agents.get(conversation.policy_name)
        run = agent.effects.run_decision(decision.id or 0) if agent is not None else None
        if run is not None:
            return run.reply
        outcome = self.store.effects_outcome(decision.id or 0)
        return outcome.sent_text if outcome is not None else None

    def effects_of(self, decision_id: int) -> list[dict[str, Any]]:
        """A decision's actions as the API shows them (name, arguments, status, result, error, key)."""
        from sopagent.engine import effect_view

        return [effect_view(e) for e in self.store.effects(decision_id)]

    def ready(self) -> str | None:
        """None when the store answers, else why not."""
        try:
            with self.store.engine.connect() as connection:
                connection.execute(sql("SELECT 1"))
        except SQLAlchemyError as exc:
            return f"the audit store is unreachable ({type(exc).__name__})"
        return None


def options_of(decision: Decision) -> list[dict[str, Any]]:
    """The decision's recorded options (empty once erased)."""
    try:
        return list(json.loads(decision.options_json or "[]"))
    except ValueError:
        return []
