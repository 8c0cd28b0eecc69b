"""The turn pipeline with a scripted test model and a real SQLite store."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from sqlmodel import Session

from sopagent import Agent, ConversationError, ScriptedModel, Store, StoreError
from sopagent.errors import ConstraintViolationError, ModelError
from sopagent.store import Decision

OK = "not_requested"
FEE = {"intent": "fee_refund", "handoff": OK}
ID_MARIA = {"card_last4": "4821", "date_of_birth": "1985-03-14", "handoff": OK}


def verified_agent(policy, store, model, **kw) -> tuple[Agent, str]:
    agent = Agent(policy, model, store, **kw)
    cid = agent.start(customer_ref="cust-1")
    agent.respond(cid, "refund my fee")
    agent.respond(cid, "4821, 14 March 1985")
    return agent, cid


def test_single_option_needs_no_model_choice(card_policy, store) -> None:
    model = ScriptedModel(facts=[{"intent": "lost_or_stolen_card", "handoff": OK}])
    agent = Agent(card_policy, model, store)
    cid = agent.start()
    result = agent.respond(cid, "I lost my card")
    assert result.response_id == "ask_identity"
    assert result.chosen_by == "policy" and result.options[0].probability == 1.0
    assert result.reply == card_policy.catalog["ask_identity"].text
    assert len(model.prompts) == 1  # the extraction only
    assert store.get_conversation(cid).step == "verify_identity"


def test_model_choice_records_every_probability(card_policy, store) -> None:
    # Maria's annual fee (95.00) is above the limit: the SOP allows "explain" or "supervisor review".
    model = ScriptedModel(facts=[FEE, ID_MARIA, {"fee_type": "annual", "handoff": OK}], choices=[[0.3, 0.7]])
    agent, cid = verified_agent(card_policy, store, model)
    result = agent.respond(cid, "the annual fee, it was your mistake")
    assert [o.response_id for o in result.options] == ["fee_refund_declined_amount", "fee_refund_supervisor_review"]
    assert result.chosen_index == 1 and result.chosen_by == "model"
    assert [o.probability for o in result.options] == [0.3, 0.7]
    assert "€95.00" in result.reply
    stored = store.decisions(cid)[-1]
    assert [o["probability"] for o in json.loads(stored.options_json)] == [0.3, 0.7]
    assert stored.confidence == 0.7


def test_low_confidence_choice_waits_for_an_operator(card_policy, store) -> None:
    model = ScriptedModel(facts=[FEE, ID_MARIA, {"fee_type": "annual", "handoff": OK}], choices=[[0.45, 0.55]])
    agent, cid = verified_agent(card_policy, store, model, confidence_threshold=0.6)
    result = agent.respond(cid, "the annual fee")
    assert result.status == "pending"
    assert result.reply == card_policy.catalog["holding_for_review"].text
    conversation = store.get_conversation(cid)
    assert conversation.status == "awaiting_approval" and conversation.step == "fee_refund"
    again = agent.respond(cid, "hello? are you there?")
    assert again.step == "awaiting_approval" and again.reply == result.reply


def test_requires_approval_response_is_pending(card_policy, store) -> None:
    facts = [{"intent": "dispute_payment", "handoff": OK}, ID_MARIA,
             {"payment_date": "2026-11-15", "amount": 899.0, "merchant": "Techland Store", "handoff": OK}]
    agent = Agent(card_policy, ScriptedModel(facts=facts), store)
    cid = agent.start()
    agent.respond(cid, "dispute")
    agent.respond(cid, "4821 1985-03-14")
    result = agent.respond(cid, "899 at Techland on 15 Nov")
    assert result.response_id == "dispute_opened_large_credit" and result.status == "pending"
    decision = store.decisions(cid)[-1]
    assert decision.sent_text == card_policy.catalog["holding_for_review"].text
    assert "€899.00" in decision.reply_text  # the held reply is stored for the operator


@pytest.mark.parametrize("failure", [ModelError("backend timed out", retryable=True),
                                     ConstraintViolationError("answered 'Z'")])
def test_model_failure_sends_fallback_and_escalates(card_policy, store, failure) -> None:
    agent = Agent(card_policy, ScriptedModel(facts=[failure]), store)
    cid = agent.start()
    result = agent.respond(cid, "hi")
    assert result.response_id == card_policy.fallback and result.status == "escalated"
    assert result.chosen_by == "fallback" and type(failure).__name__ in result.error
    assert store.decisions(cid)[-1].error == result.error


def test_a_conversation_handed_to_a_person_records_later_messages_without_answering(card_policy, store) -> None:
    agent = Agent(card_policy, ScriptedModel(facts=[ModelError("backend down")]), store)
    cid = agent.start()
    handed = agent.respond(cid, "hi")
    assert handed.status == "escalated" and card_policy.catalog[handed.response_id].ends_conversation
    later = agent.respond(cid, "hello? anyone there?")  # the model is not asked again (its script is empty)
    assert (later.status, later.reply, later.response_id) == ("received", None, None)
    assert store.decisions(cid)[-1].customer_text == "hello? anyone there?"
    assert store.get_conversation(cid).status == "escalated"


def test_choice_outside_allowed_set_is_refused_and_recorded(card_policy, store) -> None:
    model = ScriptedModel(facts=[FEE, ID_MARIA, {"fee_type": "annual", "handoff": OK}], choices=[5])
    agent, cid = verified_agent(card_policy, store, model)
    result = agent.respond(cid, "annual fee")
    assert result.status == "escalated" and "ConstraintViolationError" in result.error
    assert result.response_id == card_policy.fallback


def test_policy_bug_gives_safe_reply_not_crash(card_policy, store) -> None:
    class BrokenBank:
        def verify(self, *args):
            raise RuntimeError("backend down")

    model = ScriptedModel(facts=[{"intent": "lost_or_stolen_card", "handoff": OK}, ID_MARIA])
    agent = Agent(card_policy, model, store, tools=BrokenBank())
    cid = agent.start()
    agent.respond(cid, "I lost my card")
    result = agent.respond(cid, "4821, 14 March 1985")
    assert result.status == "escalated" and "backend down" in result.error
    assert result.response_id == card_policy.fallback


def test_failing_action_sends_the_fallback_and_records_the_failure(card_policy, store) -> None:
    from sopagent import IdempotentBackend, action

    class BrokenBank(IdempotentBackend):
        @action
        def log_complaint(self, customer_id: str | None, topic: str) -> str:
            raise RuntimeError("complaints system down")

    agent = Agent(card_policy, ScriptedModel(facts=[{"intent": "complaint", "handoff": OK}], choices=[[0.7, 0.3]]),
                  store, tools=BrokenBank())
    cid = agent.start()
    result = agent.respond(cid, "I want to complain")
    assert result.status == "escalated" and result.error == "actions failed, fallback sent: log_complaint failed"
    assert result.reply == card_policy.catalog[card_policy.fallback].render({})
    [failed] = result.effects
    assert failed["name"] == "log_complaint" and "complaints system down" in failed["error"]
    assert store.get_conversation(cid).status == "escalated"
    outcome = store.effects_outcome(result.decision_id)
    assert outcome is not None and outcome.response_id == card_policy.fallback and store.verify_chain().intact


def test_guard_hands_over_at_any_step(card_policy, store) -> None:
    model = ScriptedModel(facts=[FEE, {"card_last4": None, "date_of_birth": None, "handoff": "requested"}])
    agent = Agent(card_policy, model, store)
    cid = agent.start()
    agent.respond(cid, "fee")
    result = agent.respond(cid, "a human please")
    assert result.response_id == "handoff_to_human" and result.ended
    with pytest.raises(ConversationError, match="closed"):
        agent.respond(cid, "hello?")


def test_store_failure_means_no_reply(card_policy, tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    store = Store(f"sqlite:///{path}", timeout_s=0.2)
    agent = Agent(card_policy, ScriptedModel(facts=[FEE]), store)
    cid = agent.start()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreError, match="no reply was sent"):
            agent.respond(cid, "refund my fee")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert store.decisions(cid) == []
    assert store.get_conversation(cid).turns == 0


def test_hash_chain_verifies_and_detects_an_edit(card_policy, store) -> None:
    model = ScriptedModel(facts=[FEE, ID_MARIA, {"fee_type": "late payment", "handoff": OK}])
    agent, cid = verified_agent(card_policy, store, model)
    agent.respond(cid, "late fee")
    assert store.verify_chain().intact
    with Session(store.engine) as session:
        row = session.get(Decision, 2)
        row.customer_text = "edited afterwards"
        session.add(row)
        session.commit()
    report = store.verify_chain()
    assert not report.intact and (report.broken_kind, report.broken_id) == ("decision", 2)


def test_every_decision_records_versions_and_latency(card_policy, store) -> None:
    agent = Agent(card_policy, ScriptedModel(facts=[FEE]), store)
    cid = agent.start()
    agent.respond(cid, "fee")
    decision = store.decisions(cid)[0]
    assert decision.policy_version_id == agent.policy_version.id and decision.model_name == "scripted"
    assert agent.policy_version.catalog_sha256 == card_policy.catalog.sha256
    assert {"load", "extract", "policy", "render"} <= set(json.loads(decision.latency_json))


def test_empty_message_is_a_clear_error(card_policy, store) -> None:
    agent = Agent(card_policy, ScriptedModel(), store)
    with pytest.raises(ConversationError, match="empty"):
        agent.respond(agent.start(), "   ")
    with pytest.raises(ConversationError, match="unknown conversation"):
        agent.respond("nope", "hi")


def test_shared_model_queue_wait_is_recorded_apart_from_model_time(card_policy, tmp_path: Path) -> None:
    # Two conversations call one queued model at once: the second waits for the first call. The
    # wait goes to the "model_queue" lap, so "extract" stays the model's own time (load benchmarks
    # rely on that to compare end-to-end time with model time).
    import threading

    from sopagent.models.echo import EchoModel
    from sopagent.server.runtime import QueuedModel

    store = Store(f"sqlite:///{tmp_path / 'queue.db'}")
    delay_s = 0.3
    model = QueuedModel(EchoModel(delay_s=delay_s), timeout_s=30)
    agent = Agent(card_policy, model, store)
    cids = [agent.start() for _ in range(2)]
    barrier = threading.Barrier(2)

    def turn(cid: str) -> None:
        barrier.wait()
        agent.respond(cid, json.dumps({"intent": "lost_or_stolen_card", "handoff": OK}))

    threads = [threading.Thread(target=turn, args=(cid,)) for cid in cids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    model.shutdown()
    laps = [json.loads(store.decisions(cid)[-1].latency_json) for cid in cids]
    waited = max(laps, key=lambda lap: lap.get("model_queue", 0.0))
    assert waited["model_queue"] >= delay_s * 1000 * 0.8
    for lap in laps:
        assert delay_s * 1000 * 0.9 <= lap["extract"] < delay_s * 1000 * 1.8


def test_a_reading_told_in_the_policy_text_is_checked_against_the_description(tmp_path: Path) -> None:
    from sopagent.errors import PolicyError
    from sopagent.policy import OneOf, Policy

    class Kind(OneOf):
        options = {"lost": "lost card", "fee": "fee refund"}
        question = "The customer wrote \"{message}\". Which kind is it?"
        in_policy_text = True

    policy = Policy(name="p", version="1", catalog=tmp_path / "c.yaml", start="s", fallback="f")
    with pytest.raises(PolicyError, match="in_policy_text") as error:
        policy.step(facts=Kind, name="s")(lambda turn: [])
    assert "drop {message}" in str(error.value)
    Kind.question = "Which kind is the customer's latest message?"
    with pytest.raises(PolicyError, match="does not tell its options") as error:
        policy.step(facts=Kind, name="s")(lambda turn: [])
    assert "Kind.system_instructions()" in str(error.value)
    told = Policy(name="p", version="1", catalog=tmp_path / "c.yaml", start="s", fallback="f",
                  description="card services. Messages are of these kinds:\n" + Kind.system_instructions())
    told.step(facts=Kind, name="s")(lambda turn: [])
    assert "Which kind is the customer's latest message? Answer with the letter only." in Kind.system_instructions()
    assert Kind.system_instructions().startswith("A) lost card\nB) fee refund\n")


def test_a_reading_told_in_the_policy_text_asks_nothing_after_the_conversation() -> None:
    from sopagent.engine import facts_prompt
    from sopagent.policy import OneOf

    class Kind(OneOf):
        options = {"lost": "lost card", "fee": "fee refund"}
        question = "Which kind is the customer's latest message?"

    asked = facts_prompt("SYSTEM", "Customer: my card is gone", Kind, "my card is gone")
    Kind.in_policy_text = True
    told = facts_prompt("SYSTEM", "Customer: my card is gone", Kind, "my card is gone")
    assert "lost card" in asked.messages()[-1]["content"] and "Which kind" in asked.messages()[-1]["content"]
    assert "lost card" not in told.messages()[-1]["content"] and "Which kind" not in told.messages()[-1]["content"]


@pytest.mark.parametrize("reading, response", [([0.7, 0.3], "complaint_acknowledged"), ([0.55, 0.45], "ask_how_to_help")])
def test_a_complaint_is_logged_only_when_a_second_reading_confirms_it(card_policy, store, reading, response) -> None:
    agent = Agent(card_policy, ScriptedModel(facts=[{"intent": "complaint", "handoff": OK}], choices=[reading, 0]),
                  store)
    result = agent.respond(agent.start(), "could you open a savings account for me")
    assert result.response_id == response
    assert [e["name"] for e in result.effects] == (["log_complaint"] if response == "complaint_acknowledged" else [])
    [check] = result.facts["follow_up_readings"]
    assert check["schema"] == "YesNo" and check["answer"]["probabilities"]["yes"] == reading[0]


def test_a_check_reads_the_latest_message_alone(card_policy, store) -> None:
    complaint = {"intent": "complaint", "handoff": "not_requested"}
    model = ScriptedModel(facts=[complaint, complaint], choices=[[0.8, 0.2], [0.8, 0.2]])  # yes, yes
    agent = Agent(card_policy, model, store)
    cid = agent.start()
    agent.respond(cid, "your app has been down for three days")
    second = agent.respond(cid, "and your staff were rude to me")
    assert second.response_id == "complaint_acknowledged"
    check = model.prompts[-1]
    assert "Does the customer's latest message make a complaint" in check.task
    assert "your staff were rude" in check.context and "down for three days" not in check.context
    reading = store.decisions(cid)[-1].facts_json
    assert '"latest_only": true' in reading
