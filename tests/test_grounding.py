"""Grounding: a value the customer's message does not support is not given, so the procedure asks."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest
from pydantic import ValidationError
from sqlmodel import select

from sopagent import Agent, ScriptedModel, Store
from sopagent.audit.explain import explain_decision
from sopagent.grounding import FIELD_PROBABILITIES, UNGROUNDED, ground, settle_facts, why_not_grounded
from sopagent.models.base import PROBABILITIES_KEY, validate_facts
from sopagent.models.local import field_probabilities
from sopagent.store import FailedCheck

OK = "not_requested"
FEE = {"intent": "fee_refund", "handoff": OK}


@pytest.mark.parametrize("value, message, why", [
    ("4821", "card ending 4821, born 14 March 1985", None),
    ("1435", "sorry, it's 14 March 1985", "not in the message"),
    ("8211", "4821, 14", "not in the message"),
    ("#W4817420", "cancel W4817420 please", None),
    ("#W4817420", "cancel my last order please", "not in the message"),
    ("Noah Brown", "i'm noah   brown, 80279", None),
    ("noah.brown@example.com", "it's Noah.Brown@example.com", None),
    (Decimal("42.90"), "it was 42,90 EUR at City Books", None),
    (899.0, "899 euros at Techland", None),
    (1250.0, "about twelve hundred", "not in the message"),
    (dt.date(1985, 3, 14), "born 14 March 1985", None),
    (dt.date(1985, 3, 14), "march 14th '85", None),
    (dt.date(1985, 3, 14), "14/03/1985", None),
    (dt.date(1985, 3, 14), "1985-03-14", None),
    (dt.date(1992, 11, 2), "born 02/11/1992", "ambiguous"),
    (dt.date(1992, 2, 11), "born 02/11/1992", "ambiguous"),
    (dt.date(2026, 11, 12), "at City Books on 12/11", "ambiguous"),
    (dt.date(2026, 11, 15), "at Techland Store on 15 November", None),
    (dt.date(1990, 3, 14), "4821, 14 March 1985", "not in the message"),
    (dt.date(1985, 3, 14), "just my card number 4821", "not in the message"),
])
def test_a_value_counts_only_when_the_message_writes_it(value, message, why) -> None:
    assert why_not_grounded(value, message) == why


def test_enums_and_required_fields_are_not_dropped(card_policy) -> None:
    request = card_policy.steps["welcome"].facts(intent="fee_refund", handoff=OK)
    assert ground(request, "hello") == (request, {})
    identity = card_policy.steps["verify_identity"].facts(card_last4="1435", date_of_birth="1985-03-14", handoff=OK)
    grounded, dropped = ground(identity, "sorry, 14 March 1985")
    assert grounded.card_last4 is None and grounded.date_of_birth == dt.date(1985, 3, 14)
    assert dropped == {"card_last4": {"value": "1435", "why": "not in the message"}}


def test_digits_made_up_from_a_date_do_not_verify_and_are_recorded(card_policy, store: Store) -> None:
    model = ScriptedModel(facts=[FEE, {"card_last4": "1435", "date_of_birth": "1985-03-14", "handoff": OK}])
    agent = Agent(card_policy, model, store)
    cid = agent.start()
    agent.respond(cid, "I want a fee refunded")
    result = agent.respond(cid, "sorry, it's 14 March 1985")
    assert result.response_id == "identity_retry" and result.facts["card_last4"] is None
    assert result.facts[UNGROUNDED] == {"card_last4": {"value": "1435", "why": "not in the message"}}
    assert json.loads(store.decisions(cid)[-1].facts_json)[UNGROUNDED]["card_last4"]["value"] == "1435"
    assert "not taken: card_last4='1435' (not in the message)" in explain_decision(store, result.decision_id)


def test_a_date_that_reads_two_ways_is_asked_again_with_the_month_as_a_word(card_policy, store: Store) -> None:
    model = ScriptedModel(facts=[FEE, {"card_last4": "4821", "date_of_birth": "1985-04-03", "handoff": OK},
                                 {"card_last4": None, "date_of_birth": "1985-03-14", "handoff": OK}])
    agent = Agent(card_policy, model, store)
    cid = agent.start()
    agent.respond(cid, "I want a fee refunded")
    asked = agent.respond(cid, "4821 and 03/04/1985")
    assert asked.response_id == "ask_date_written_out" and asked.facts[UNGROUNDED]["date_of_birth"]["why"] == "ambiguous"
    verified = agent.respond(cid, "14 March 1985")  # the card digits of the turn before are still known
    assert verified.response_id == "ask_fee_type"


def test_a_one_of_label_is_chosen_not_copied(card_policy) -> None:
    confirmation = card_policy.steps["confirm_block"].facts(label="human", probabilities={"human": 0.6})
    assert ground(confirmation, "let me talk to somebody from your team") == (confirmation, {})


def test_each_field_value_gets_the_probability_of_the_tokens_that_wrote_it() -> None:
    raw = '{"card_last4": "4821", "date_of_birth": null, "handoff": "not_requested"}'
    steps = [(b'{"card_last4":', 1.0), (b' "48', 0.9), (b'21"', 0.5), (b', "date_of_birth":', 1.0), (b" null", 0.25),
             (b', "handoff":', 1.0), (b' "not', 0.8), (b'_requested"', 1.0), (b"}", 1.0)]
    assert field_probabilities(raw, steps) == {"card_last4": 0.45, "date_of_birth": 0.25, "handoff": 0.8}
    assert field_probabilities("not json", steps) == {}


def test_an_optional_value_not_valid_for_its_field_is_set_aside_and_a_required_one_refuses(card_policy) -> None:
    identity = card_policy.steps["verify_identity"].facts
    facts, invalid = validate_facts(identity, '{"card_last4": "4821", "date_of_birth": "1985-02-30", '
                                              '"handoff": "not_requested"}')
    assert facts.card_last4 == "4821" and facts.date_of_birth is None and invalid == {"date_of_birth": "1985-02-30"}
    with pytest.raises(ValidationError):
        validate_facts(card_policy.steps["welcome"].facts, '{"intent": "buy_a_boat", "handoff": "not_requested"}')


def test_a_value_read_below_the_policys_fact_confidence_is_unsure_and_not_taken(card_policy) -> None:
    choice = card_policy.steps["fee_refund"].facts(fee_type="annual", handoff="requested")
    settled, dropped = settle_facts(choice, "annual fee please", {"fee_type": 0.41, "handoff": 0.3}, 0.5)
    assert settled.fee_type is None and settled.handoff == OK  # back at their defaults: not given
    assert dropped == {"fee_type": {"value": "annual", "why": "unsure", "probability": 0.41},
                       "handoff": {"value": "requested", "why": "unsure", "probability": 0.3}}
    kept, none = settle_facts(choice, "annual fee please", {"fee_type": 0.9, "handoff": 0.3}, 0.2)
    assert kept == choice and none == {}
    assert settle_facts(choice, "annual fee please", {}, 0.99) == (choice, {})  # unknown: nothing to weigh


def test_an_unsure_fee_type_is_asked_for_and_recorded_with_its_probability(card_policy, store: Store) -> None:
    identity = {"card_last4": "4821", "date_of_birth": "1985-03-14", "handoff": OK}
    unsure = {"fee_type": "annual", "handoff": OK, PROBABILITIES_KEY: {"fee_type": 0.3, "handoff": 0.97}}
    model = ScriptedModel(facts=[FEE, identity, unsure])
    card_policy.fact_confidence = 0.5  # this test's own copy of the policy
    agent = Agent(card_policy, model, store)
    cid = agent.start()
    agent.respond(cid, "I want a fee refunded")
    agent.respond(cid, "4821, 14 March 1985")
    result = agent.respond(cid, "the annual one? or maybe another, not sure")
    assert result.response_id == "ask_fee_type" and result.facts["fee_type"] is None
    recorded = json.loads(store.decisions(cid)[-1].facts_json)
    assert recorded[FIELD_PROBABILITIES] == {"fee_type": 0.3, "handoff": 0.97}
    assert recorded[UNGROUNDED]["fee_type"] == {"value": "annual", "why": "unsure", "probability": 0.3}
    shown = explain_decision(store, result.decision_id)
    assert "handoff='not_requested' (p 0.97)" in shown
    assert "not taken: fee_type='annual' (unsure: p 0.30, below the policy's fact_confidence)" in shown


def test_a_one_token_field_is_read_by_itself_and_taken_only_above_its_bar(retail_policy, store: Store) -> None:
    shown = {"full_name": "Noah Brown", "zip_code": "80279", "email": None, "asks_for_human": "no"}
    measured = {PROBABILITIES_KEY: {"order_id": 0.5, "refund_to": 0.9, "asks_for_human": 0.9}}
    model = ScriptedModel(facts=[{"intent": "return_order", "asks_for_human": "no"}, shown,
                                 {"order_id": "#W2306951", "refund_to": "gift card", "asks_for_human": "no", **measured},
                                 {"order_id": None, "refund_to": "gift card", "asks_for_human": "no", **measured}],
                          choices=[[0.35, 0.41, 0.24], [0.12, 0.83, 0.05]])  # not said, original method, gift card
    agent = Agent(retail_policy, model, store)
    cid = agent.start()
    agent.respond(cid, "I want to return my running shoes")
    agent.respond(cid, "Noah Brown, 80279")
    unsure = agent.respond(cid, "#W2306951, put the money wherever")
    assert unsure.facts["refund_to"] is None  # 0.41 is below the field's bar: not given
    assert unsure.facts[UNGROUNDED]["refund_to"] == {"value": "original payment method", "why": "unsure",
                                                     "probability": 0.41}
    assert [r["field"] for r in unsure.facts["follow_up_readings"] if r.get("schema") == "OneToken"] == ["refund_to"]
    asked = model.prompts[-1].task
    assert "Where does the latest message say the refund should go?" in asked
    assert "the message does not say where the refund should go" in asked  # the explicit not-said option
    read = agent.respond(cid, "refund to the card i paid with")
    assert read.facts["refund_to"] == "original payment method" and read.facts[FIELD_PROBABILITIES]["refund_to"] == 0.83
    assert UNGROUNDED not in read.facts  # the reading by itself replaced the JSON's guess
    assert read.response_id != unsure.response_id


def test_a_one_token_marker_must_name_the_fields_values() -> None:
    from typing import Annotated, Literal

    from sopagent import Facts, OneToken, PolicyError
    from sopagent.policy import one_token_fields

    class Wrong(Facts):
        refund_to: Annotated[Literal["card", "gift card"] | None, OneToken(
            question="Where should the refund go?", not_said="not said", options={"voucher": "a voucher"})] = None

    with pytest.raises(PolicyError, match="voucher"):
        one_token_fields(Wrong)


def test_an_identity_check_locks_a_card_across_conversations(card_policy, store: Store) -> None:
    wrong = {"card_last4": "4821", "date_of_birth": "1990-01-01", "handoff": OK}
    right = {"card_last4": "4821", "date_of_birth": "1985-03-14", "handoff": OK}
    model = ScriptedModel(facts=[FEE, wrong, wrong, wrong, FEE, wrong, wrong, FEE, right])
    agent = Agent(card_policy, model, store)
    answers = []
    for attempts in (3, 2):  # 3 wrong pairs end the first conversation; 2 more in a new one
        cid = agent.start()
        agent.respond(cid, "I want a fee refunded")
        answers += [agent.respond(cid, "4821, 1 January 1990").response_id for _ in range(attempts)]
    assert answers == ["identity_retry", "identity_retry", "handoff_to_human", "identity_retry", "identity_retry"]
    assert store.recent_failures("card_services", "identity", "4821", "2000-01-01") == 5
    locked = agent.start()
    agent.respond(locked, "I want a fee refunded")
    result = agent.respond(locked, "4821, 14 March 1985")  # the right pair, but the card is locked now
    assert result.response_id == "handoff_to_human"
    with store.session() as session:
        digests = {row.subject_digest for row in session.exec(select(FailedCheck)).all()}
    assert len(digests) == 1 and "4821" not in next(iter(digests))
