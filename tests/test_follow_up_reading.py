"""``Turn.read``: a step asks the model one more question; the answer is constrained and audited.

A scripted model plays the model; the store is a real SQLite file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import pytest
import yaml

from sopagent import Agent, ScriptedModel, Store
from sopagent.errors import ModelError, PolicyError
from sopagent.policy import Facts, NoFacts, OneOf, Option, Policy, Turn, say


class AccountNumber(Facts):
    """The account number, where the customer already gave it."""

    number: Optional[str] = None


QUESTION = "Which account number did the customer give? JSON, null if none."


def account_policy(tmp_path: Path, question: str = QUESTION) -> Policy:
    """Ask for the account number unless the model finds it in the conversation (by ``question``)."""
    policy = bare_policy(tmp_path)

    @policy.step(facts=NoFacts, name="start")
    def start(turn: Turn[Any, Any]) -> list[Option]:
        given = turn.read(question, AccountNumber)
        return [say("look_up" if given.number else "ask_account", next="start")]

    return policy


def bare_policy(tmp_path: Path) -> Policy:
    """The account catalog and a policy with no steps yet."""
    catalog = tmp_path / "account.yaml"
    catalog.write_text(yaml.safe_dump({"catalog": "account", "version": "1", "responses": [
        {"id": "ask_account", "text": "What is your account number?", "description": "ask for the account"},
        {"id": "look_up", "text": "One moment, I am looking it up.", "description": "look the account up"},
        {"id": "handoff", "text": "Let me pass you to a colleague.", "description": "hand over"},
    ]}), encoding="utf-8")
    return Policy(name="account", version="1", catalog=catalog, start="start", fallback="handoff")


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'audit.db'}")


@pytest.mark.parametrize(("number", "reply"), [("12345678", "look_up"), (None, "ask_account")])
def test_the_step_acts_on_the_reading_and_the_decision_records_it(tmp_path, store, number, reply) -> None:
    model = ScriptedModel(facts=[{"number": number}])
    agent = Agent(account_policy(tmp_path), model, store)
    conversation = agent.start()
    result = agent.respond(conversation, "balance of account 12345678 please")
    assert result.response_id == reply and result.chosen_by == "policy"
    prompt = model.prompts[0]
    assert prompt.task == QUESTION
    assert prompt.context.endswith("Customer (latest message): balance of account 12345678 please")
    facts = json.loads(store.decisions(conversation)[-1].facts_json)
    assert facts["follow_up_readings"] == [{"question": prompt.task, "schema": "AccountNumber",
                                           "answer": {"number": number}}]
    assert store.verify_chain().intact


def test_a_failed_reading_sends_the_fallback_as_a_model_error(tmp_path, store) -> None:
    model = ScriptedModel(facts=[ModelError("backend timed out", retryable=True)])
    agent = Agent(account_policy(tmp_path), model, store)
    conversation = agent.start()
    result = agent.respond(conversation, "balance please")
    assert result.response_id == "handoff" and result.chosen_by == "fallback"
    assert result.error.startswith("ModelError")  # not reported as a bug in the policy


def test_a_reading_outside_the_schema_is_refused(tmp_path, store) -> None:
    model = ScriptedModel(facts=[{"number": "1", "extra": "not in the schema"}])
    agent = Agent(account_policy(tmp_path), model, store)
    result = agent.respond(agent.start(), "balance please")
    assert result.chosen_by == "fallback" and "did not validate" in result.error


def test_read_outside_an_agent_says_how_to_fix_it() -> None:
    turn: Turn[Any, Any] = Turn(facts=NoFacts(), known={}, tools=None, step="start", conversation_id="c")
    with pytest.raises(PolicyError, match="turn.read"):
        turn.read("anything?", AccountNumber)


def test_replay_reuses_the_recorded_reading_and_asks_again_when_the_question_changed(tmp_path, store) -> None:
    from sopagent.audit.replay import replay

    agent = Agent(account_policy(tmp_path), ScriptedModel(facts=[{"number": "12345678"}]), store)
    assert agent.respond(agent.start(), "balance of account 12345678").response_id == "look_up"

    def no_model() -> ScriptedModel:
        pytest.fail("the model was asked although the question and the conversation are as recorded")

    same = replay(store, account_policy(tmp_path), model_factory=no_model)
    assert same.turns == 1 and same.changes == [] and same.model_calls == 0

    changed = account_policy(tmp_path, "Did the customer give an account number?")
    report = replay(store, changed, model_factory=lambda: ScriptedModel(facts=[{"number": None}]))
    assert report.model_calls == 1
    assert [(c.recorded.split()[0], c.replayed.split()[0]) for c in report.changes] == [("look_up", "ask_account")]


class Urgency(OneOf):
    """How urgent the customer's request is."""

    options = {"urgent": "urgent: \"my card was stolen\"", "routine": "routine: \"what is my balance\""}


def test_a_one_of_reading_is_one_letter_with_every_label_probability(tmp_path, store) -> None:
    policy = bare_policy(tmp_path)

    @policy.step(facts=NoFacts, name="start")
    def start(turn: Turn[Any, Any]) -> list[Option]:
        urgency = turn.read("How urgent is the customer's request?", Urgency)
        return [say("handoff" if urgency.label == "urgent" else "ask_account", next="start")]

    model = ScriptedModel(choices=[[0.3, 0.7]])
    agent = Agent(policy, model, store)
    conversation = agent.start()
    assert agent.respond(conversation, "what is my balance").response_id == "ask_account"
    assert model.prompts[0].task == ("How urgent is the customer's request?\n"
                                     "A) urgent: \"my card was stolen\"\nB) routine: \"what is my balance\"\n"
                                     "Answer with the letter only.")
    reading = json.loads(store.decisions(conversation)[-1].facts_json)["follow_up_readings"][0]
    assert reading["schema"] == "Urgency" and reading["answer"]["label"] == "routine"
    assert reading["answer"]["probabilities"] == pytest.approx({"urgent": 0.3, "routine": 0.7})


def test_a_reading_under_the_policy_text_follows_the_step_prompt_and_is_recorded_so(tmp_path, store) -> None:
    from sopagent.prompts import READING_SYSTEM

    policy = bare_policy(tmp_path)
    policy.description = "card services for a bank"
    flags: list[str | None] = []

    @policy.step(facts=NoFacts, name="start")
    def start(turn: Turn[Any, Any]) -> list[Option]:
        plain = turn.read("How urgent is the customer's request?", Urgency)
        under = turn.read("How urgent is the customer's request?", Urgency, under_policy_text=True)
        flags.extend([plain.label, under.label])
        return [say("handoff" if under.label == "urgent" else "ask_account", next="start")]

    model = ScriptedModel(choices=[[0.3, 0.7], [0.9, 0.1]])
    agent = Agent(policy, model, store)
    conversation = agent.start()
    assert agent.respond(conversation, "my card was stolen").response_id == "handoff"
    assert flags == ["routine", "urgent"]
    plain_prompt, under_prompt = model.prompts
    assert plain_prompt.system == READING_SYSTEM
    assert "card services for a bank" in under_prompt.system and under_prompt.context == plain_prompt.context
    assert under_prompt.task == plain_prompt.task
    readings = json.loads(store.decisions(conversation)[-1].facts_json)["follow_up_readings"]
    assert ["under_policy_text" in r for r in readings] == [False, True]
    from sopagent.audit.replay import replay

    again = replay(store, policy, model_factory=lambda: pytest.fail("both readings are recorded"))
    assert again.turns == 1 and again.changes == [] and again.model_calls == 0
