"""Grounding: a value the customer's message does not support is not given, so the procedure asks."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest

from sopagent import Agent, ScriptedModel, Store
from sopagent.audit.explain import explain_decision
from sopagent.grounding import UNGROUNDED, ground, why_not_grounded

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
