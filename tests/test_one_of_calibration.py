"""Calibrated readings (``OneOf.calibrate``): the engine divides by a content-free reading, once.

A scripted model plays the model's letter probabilities; the store is a real SQLite file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from sopagent import Agent, ScriptedModel, Store
from sopagent.policy import CONTENT_FREE_MESSAGES, OneOf, Option, Policy, Turn, say

KINDS = {"greeting": "says hello", "balance": "asks for the balance", "goodbye": "says goodbye"}


def kind_policy(tmp_path: Path, calibrate: bool) -> Policy:
    """Three kinds of message, each answered by its own reply; the step replies to the label read."""
    catalog = tmp_path / "kinds.yaml"
    catalog.write_text(yaml.safe_dump({"catalog": "kinds", "version": "1", "responses": [
        {"id": f"reply_{k}", "text": f"You {text}.", "description": f"when the customer {text}"}
        for k, text in KINDS.items()]}), encoding="utf-8")
    Kind = type("Kind", (OneOf,), {"__doc__": "The kind of message.", "__module__": __name__,
                                  "options": KINDS, "calibrate": calibrate})
    policy = Policy(name="kinds", version="1", catalog=catalog, start="start", fallback="reply_greeting")

    @policy.step(facts=Kind, name="start")
    def start(turn: Turn[Any, Any]) -> list[Option]:
        return [say(f"reply_{turn.facts.label}", next="start")]

    return policy


def test_calibration_divides_by_the_content_free_reading_and_reads_it_once(tmp_path: Path) -> None:
    # The model leans to the first letter whatever is written (0.6 for a message that says nothing);
    # 0.5 on it for a real message is then less than its usual share, and "balance" wins.
    biased = [0.6, 0.2, 0.2]
    model = ScriptedModel(choices=[[0.5, 0.3, 0.2], biased, biased, biased, [0.5, 0.3, 0.2]])
    store = Store(f"sqlite:///{tmp_path / 'audit.db'}")
    agent = Agent(kind_policy(tmp_path, calibrate=True), model, store)
    conversation = agent.start()
    result = agent.respond(conversation, "how much money do I have")
    assert result.response_id == "reply_balance"
    weights = [0.5 / 0.6, 0.3 / 0.2, 0.2 / 0.2]
    expected = {k: w / sum(weights) for k, w in zip(KINDS, weights)}
    facts = json.loads(store.decisions(conversation)[-1].facts_json)
    assert facts["label"] == "balance"
    assert facts["probabilities"] == pytest.approx(expected)
    assert facts["model_probabilities"] == pytest.approx(dict(zip(KINDS, [0.5, 0.3, 0.2])))
    # one reading of the message, then one per content-free message, each alone in its conversation
    assert len(model.prompts) == 1 + len(CONTENT_FREE_MESSAGES)
    for prompt, message in zip(model.prompts[1:], CONTENT_FREE_MESSAGES):
        assert prompt.context.splitlines()[1:] == [f"Customer (latest message): {message}"]
        assert prompt.system == model.prompts[0].system
        assert prompt.task == model.prompts[0].task.replace("how much money do I have", message)
    agent.respond(conversation, "how much money do I have")
    assert len(model.prompts) == 2 + len(CONTENT_FREE_MESSAGES)  # the content-free reading is kept


def test_without_calibration_the_model_reading_stands(tmp_path: Path) -> None:
    model = ScriptedModel(choices=[[0.5, 0.3, 0.2]])
    store = Store(f"sqlite:///{tmp_path / 'audit.db'}")
    agent = Agent(kind_policy(tmp_path, calibrate=False), model, store)
    conversation = agent.start()
    assert agent.respond(conversation, "how much money do I have").response_id == "reply_greeting"
    facts = json.loads(store.decisions(conversation)[-1].facts_json)
    assert facts["probabilities"] == pytest.approx(dict(zip(KINDS, [0.5, 0.3, 0.2])))
    assert facts["model_probabilities"] == {}
    assert len(model.prompts) == 1
