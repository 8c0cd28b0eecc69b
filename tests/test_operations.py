"""Operator actions on a real SQLite store: approval, override, take-over, pause; each chained."""

from __future__ import annotations

import pytest

from sopagent.engine import Agent
from sopagent.errors import ConversationError
from sopagent.models.scripted import ScriptedModel
from sopagent.operations import Operations
from sopagent.store import Store

FEE = {"intent": "fee_refund", "handoff": "not_requested"}
NONE = {"handoff": "not_requested"}


def _agent(card_policy, store: Store, facts: list[dict], confidence: float = 0.0) -> Agent:
    return Agent(card_policy, ScriptedModel(facts=facts), store, confidence_threshold=confidence)


def test_paused_conversation_records_without_answering(card_policy, store: Store) -> None:
    agent = _agent(card_policy, store, [FEE, FEE])
    cid = agent.start()
    ops = Operations(store, "ana")
    ops.pause(cid, reason="customer called the branch")
    result = agent.respond(cid, "hello?")
    assert result.reply is None and result.status == "received"
    ops.resume(cid)
    assert agent.respond(cid, "I was charged a fee").reply
    assert [type(r).__name__ for r in store.transcript(cid)] == [
        "OperatorAction", "Decision", "OperatorAction", "Decision"]
    assert store.verify_chain().intact


def test_take_over_reply_and_hand_back(card_policy, store: Store) -> None:
    agent = _agent(card_policy, store, [FEE])
    cid = agent.start()
    ops = Operations(store, "ana")
    ops.take_over(cid, reason="vip")
    with pytest.raises(ConversationError, match="undeclared slot values"):
        ops.reply(cid, "ask_identity", {"unexpected": "x"})
    action = ops.reply(cid, "ask_identity")
    assert action.sent_text == card_policy.catalog["ask_identity"].render({})
    with pytest.raises(ConversationError, match="has no step 'nowhere'"):
        ops.hand_back(cid, "nowhere")
    ops.hand_back(cid, "verify_identity")
    conversation = store.get_conversation(cid)
    assert (conversation.status, conversation.step) == ("active", "verify_identity")
    actions = store.actions(cid)
    assert [a.action for a in actions] == ["take_over", "operator_reply", "hand_back"]
    assert all(a.operator == "ana" for a in actions) and store.verify_chain().intact


def test_step_names_are_the_steps_the_stored_policy_declares(card_policy, store: Store) -> None:
    cid = _agent(card_policy, store, [FEE]).start()
    ops = Operations(store, "ana")
    names = ops.step_names(cid)
    assert names == sorted(card_policy.steps) and len(names) > 1
    with pytest.raises(ConversationError):
        ops.step_names("no-such-conversation")


def test_override_refuses_the_option_the_agent_chose(card_policy, store: Store) -> None:
    model = ScriptedModel(facts=[FEE, {"card_last4": "4821", "date_of_birth": "1985-03-14", **NONE},
                                 {"fee_type": "annual", **NONE}], choices=[[0.45, 0.55]])
    agent = Agent(card_policy, model, store, confidence_threshold=0.6)
    cid = agent.start(customer_ref="cust-1")
    for text in ("refund a fee", "4821, 14 March 1985", "the annual fee"):
        pending = agent.respond(cid, text)
    assert pending.status == "pending"
    ops = Operations(store, "ana")
    with pytest.raises(ConversationError, match="is the one the agent chose; approve decision"):
        ops.override(pending.decision_id, 1, reason="same one")
    assert store.actions(cid) == []  # nothing recorded, still waiting
    assert ops.override(pending.decision_id, 0, reason="explain instead").response_id == "fee_refund_declined_amount"
