"""Operator actions: approve, override, escalate, take over, reply, hand back, pause, resume.

Each action is one chained audit record (operator, time, reason) committed together with the
conversation's new state. Replies an operator sends are catalog responses rendered with validated
slots, never free text. The same class serves the Textual console and the HTTP backend.

Approval covers the deed: a held decision's planned effects are released by ``approve`` (in the
same transaction as the approval), replaced by the other option's by ``override``, and cancelled by
``escalate``. The agent's effect runner (:mod:`sopagent.outbox`) then runs what was released and
sends the reply filled from the results; a reply with no effects is sent by the action itself.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col

from sopagent.catalog import Catalog, parse_catalog
from sopagent.errors import ConversationError
from sopagent.policy import END
from sopagent.status import Status
from sopagent.store import Conversation, Decision, OperatorAction, OutboxEffect, PolicyVersion, Store, utcnow
from sopagent.store.store import add_effects

CLOSED = "closed"


class Operations:
    """What one named operator can do to conversations in an audit store."""

    def __init__(self, store: Store, operator: str) -> None:
        if not operator or not operator.strip():
            raise ConversationError("an operator name is required; pass --operator NAME")
        self.store = store
        self.operator = operator.strip()
        self._catalogs: dict[int, Catalog] = {}

    # --- the approval queue ------------------------------------------------------------------

    def approve(self, decision_id: int, reason: str = "") -> OperatorAction:
        """Send the reply that waited for approval; the conversation moves on to its next step."""
        decision, conversation = self._pending(decision_id)
        return self._settle("approve", decision, conversation, decision.chosen_index or 0, reason)

    def override(self, decision_id: int, option_index: int, reason: str = "") -> OperatorAction:
        """Send another option from the decision's allowed set instead of the one chosen."""
        decision, conversation = self._pending(decision_id)
        options = json.loads(decision.options_json or "[]")
        if not 0 <= option_index < len(options):
            raise ConversationError(f"decision {decision_id} allowed options 0..{len(options) - 1}; "
                                    f"{option_index} is not one of them")
        option = options[option_index]
        if option_index == decision.chosen_index:
            raise ConversationError(f"option {option_index} ({option['response_id']}) is the one the agent chose; "
                                    f"approve decision {decision_id} to send it, or pick another option")
        return self._settle("override", decision, conversation, option_index, reason)

    def escalate(self, decision_id: int, reason: str = "") -> OperatorAction:
        """Do not send the pending reply nor do its actions; mark the conversation escalated."""
        decision, conversation = self._pending(decision_id)
        conversation.status = "escalated"
        action = OperatorAction(operator=self.operator, action="escalate", conversation_id=conversation.id,
                                decision_id=decision.id, reason=reason, created_at=utcnow())
        return self.store.append_action(action, conversation, then=_release_effects(decision, None, []))

    # --- taking a conversation over ---------------------------------------------------------

    def take_over(self, conversation_id: str, reason: str = "") -> OperatorAction:
        """The agent stops answering; the operator answers with catalog responses."""
        return self._set_status(conversation_id, "take_over", "taken_over", reason)

    def reply(self, conversation_id: str, response_id: str, slots: dict[str, Any] | None = None,
              reason: str = "") -> OperatorAction:
        """Send a catalog response (slots validated by the catalog) in a conversation taken over."""
        conversation = self.store.get_conversation(conversation_id)
        if conversation.status != "taken_over":
            raise ConversationError(f"conversation {conversation_id} is {conversation.status}; take it over first")
        catalog = self.catalog_for(conversation)
        if response_id not in catalog:
            raise ConversationError(f"{response_id!r} is not in the catalog of policy {conversation.policy_name}")
        response = catalog[response_id]
        try:
            text = response.render(slots or {})
        except ValueError as exc:  # a missing, extra or badly typed slot value
            raise ConversationError(f"{exc}; fill every slot of {response_id!r} "
                                    f"({', '.join(response.slots) or 'none'}) with a valid value") from exc
        action = OperatorAction(operator=self.operator, action="operator_reply", conversation_id=conversation_id,
                                reason=reason, response_id=response_id, created_at=utcnow(),
                                slots_json=json.dumps(response.coerce_values(slots or {}), sort_keys=True),
                                sent_text=text)
        return self.store.append_action(action, conversation)

    def hand_back(self, conversation_id: str, step: str, reason: str = "") -> OperatorAction:
        """Give the conversation back to the agent at ``step``."""
        conversation = self.store.get_conversation(conversation_id)
        if conversation.status not in ("taken_over", "paused", "escalated"):
            raise ConversationError(f"conversation {conversation_id} is {conversation.status}; nothing to hand back")
        version = self._version(conversation.policy_version_id)
        steps = _step_names(version)
        if steps and step not in steps:
            raise ConversationError(f"policy {conversation.policy_name} has no step {step!r}; "
                                    f"choose one of: {', '.join(sorted(steps))}")
        conversation.step = step
        conversation.status = "active"
        action = OperatorAction(operator=self.operator, action="hand_back", conversation_id=conversation_id,
                                next_step=step, reason=reason, created_at=utcnow())
        return self.store.append_action(action, conversation)

    def pause(self, conversation_id: str, reason: str = "") -> OperatorAction:
        """The agent stops answering this conversation until resumed (messages are still recorded)."""
        return self._set_status(conversation_id, "pause", "paused", reason)

    def resume(self, conversation_id: str, reason: str = "") -> OperatorAction:
        """The agent answers this conversation again."""
        conversation = self.store.get_conversation(conversation_id)
        if conversation.status != "paused":
            raise ConversationError(f"conversation {conversation_id} is {conversation.status}, not paused")
        conversation.status = "active"
        action = OperatorAction(operator=self.operator, action="resume", conversation_id=conversation_id,
                                reason=reason, created_at=utcnow())
        return self.store.append_action(action, conversation)

    # --- helpers -----------------------------------------------------------------------------

    def catalog_for(self, conversation: Conversation) -> Catalog:
        """The catalog of the policy version the conversation runs (from the stored snapshot), in the
        conversation's language."""
        if conversation.policy_version_id not in self._catalogs:
            version = self._version(conversation.policy_version_id)
            self._catalogs[conversation.policy_version_id] = parse_catalog(
                version.catalog_source, f"<catalog of {version.name} {version.version}>")
        return self._catalogs[conversation.policy_version_id].in_language(conversation.language())

    def step_names(self, conversation_id: str) -> list[str]:
        """The step names the conversation's policy version declares, sorted (what ``hand_back`` accepts).

        Read from the stored policy source without running it; empty when the source declares none
        that can be read (``hand_back`` then accepts any step).
        """
        conversation = self.store.get_conversation(conversation_id)
        return sorted(_step_names(self._version(conversation.policy_version_id)))

    def _version(self, version_id: int) -> PolicyVersion:
        with self.store.session() as session:
            version = session.get(PolicyVersion, version_id)
        if version is None:
            raise ConversationError(f"policy version {version_id} is missing from the audit store")
        return version

    def _pending(self, decision_id: int) -> tuple[Decision, Conversation]:
        with self.store.session() as session:
            decision = session.get(Decision, decision_id)
        if decision is None:
            raise ConversationError(f"decision {decision_id} does not exist (deleted meanwhile?)")
        if decision.status != Status.PENDING:
            raise ConversationError(f"decision {decision_id} is {decision.status}, not waiting for approval")
        done = self.store.resolution(decision_id)
        if done is not None:
            raise ConversationError(f"decision {decision_id} was already handled: {done.action} by "
                                    f"{done.operator} at {done.created_at}")
        return decision, self.store.get_conversation(decision.conversation_id)

    def _settle(self, kind: str, decision: Decision, conversation: Conversation, index: int,
                reason: str) -> OperatorAction:
        option = json.loads(decision.options_json or "[]")[index]
        response_id, slots, next_step = option["response_id"], option["slots"], option["next_step"]
        catalog = self.catalog_for(conversation)
        response = catalog[response_id]
        effects = option.get("effects") or []
        # A reply with actions is sent by the effect runner, filled from their results, once they ran.
        text = None if effects else response.render(slots)
        ends = response.ends_conversation or next_step == END
        conversation.status = CLOSED if ends else "active"
        if next_step != END:
            conversation.step = next_step
        action = OperatorAction(operator=self.operator, action=kind, conversation_id=conversation.id,
                                decision_id=decision.id, reason=reason, response_id=response_id,
                                next_step=next_step, created_at=utcnow(),
                                slots_json=json.dumps(slots, sort_keys=True), sent_text=text)
        return self.store.append_action(action, conversation, then=_release_effects(decision, index, effects))

    def _set_status(self, conversation_id: str, kind: str, status: str, reason: str) -> OperatorAction:
        conversation = self.store.get_conversation(conversation_id)
        if conversation.status == CLOSED:
            raise ConversationError(f"conversation {conversation_id} is closed")
        if conversation.status == status:
            raise ConversationError(f"conversation {conversation_id} is already {status}")
        conversation.status = status
        action = OperatorAction(operator=self.operator, action=kind, conversation_id=conversation_id,
                                reason=reason, created_at=utcnow())
        return self.store.append_action(action, conversation)


def _release_effects(decision: Decision, option_index: int | None, effects: list[dict[str, Any]]) -> Any:
    """What a resolving action does to the decision's held effects, inside its own transaction:
    approve releases the chosen option's (``planned``), override cancels them and plans the other
    option's, escalate (``option_index`` None) cancels them."""

    def release(session: Session, action: OperatorAction) -> None:
        held = (col(OutboxEffect.decision_id) == decision.id) & (col(OutboxEffect.status) == "held")
        if option_index is not None and option_index == decision.chosen_index:
            session.execute(update(OutboxEffect).where(held).values(status="planned", updated_at=action.created_at))
            return
        session.execute(update(OutboxEffect).where(held).values(status="cancelled", updated_at=action.created_at))
        if option_index is None or not effects:
            return
        policy_name = session.get(Conversation, decision.conversation_id).policy_name  # type: ignore[union-attr]
        add_effects(session, decision, [
            OutboxEffect(policy_name=policy_name, option_index=option_index, position=i, name=e["name"],
                   irreversible=bool(e.get("irreversible")), status="planned", decision_id=0, conversation_id="",
                   idempotency_key="", arguments_json=json.dumps(e.get("arguments") or {}, sort_keys=True))
            for i, e in enumerate(effects)])

    return release


def _step_names(version: PolicyVersion) -> set[str]:
    """Step names declared in a stored policy source (``@policy.step`` functions), without running it."""
    import ast

    names: set[str] = set()
    try:
        tree = ast.parse(version.source)
    except SyntaxError:
        return names
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            for deco in node.decorator_list:
                target = deco.func if isinstance(deco, ast.Call) else deco
                if isinstance(target, ast.Attribute) and target.attr == "step":
                    explicit = [k.value for k in getattr(deco, "keywords", []) if k.arg == "name"]
                    value = explicit[0] if explicit else None
                    names.add(str(value.value) if isinstance(value, ast.Constant) else node.name)
    return names
