"""Preparing the next turn while the customer types: the conversation so far goes into the model's cache,
never ahead of a waiting turn."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from sopagent import Store
from sopagent.engine import Agent
from sopagent.models.base import CallStats, ChatPrompt, Extraction
from sopagent.models.echo import EchoModel
from sopagent.server.runtime import QueuedModel


class Slow(EchoModel):
    """The echo model with a cache to prepare: records what it was asked to evaluate."""

    def __init__(self) -> None:
        super().__init__()
        self.prepared: list[str] = []
        self.busy = threading.Event()
        self.release = threading.Event()

    def prefetch(self, prompt: ChatPrompt, upto: str) -> CallStats:
        self.prepared.append(prompt.context)
        return CallStats(prompt_tokens=1)

    def extract(self, prompt: ChatPrompt, schema: Any) -> Extraction:
        self.busy.set()
        self.release.wait(5)
        return super().extract(prompt, schema)


def test_a_prepared_prompt_is_the_next_turns_prompt_up_to_the_customers_words(card_policy, store: Store) -> None:
    model = Slow()
    model.release.set()
    agent = Agent(card_policy, model, store, tools=card_policy.make_tools())
    cid = agent.start()
    agent.respond(cid, '{"intent": "lost_or_stolen_card", "handoff": "not_requested"}')
    assert agent.prepare_next(cid) is not None
    [context] = model.prepared
    assert context.endswith("Customer (latest message): ")
    assert "Agent: Before I can look at your account" in context
    closed = agent.start()
    agent.respond(closed, '{"intent": "lost_or_stolen_card", "handoff": "requested"}')
    assert store.get_conversation(closed).status == "closed" and agent.prepare_next(closed) is None


def test_the_service_queue_prepares_only_when_no_call_waits() -> None:
    model = Slow()
    queued = QueuedModel(model, timeout_s=10)
    prompt = ChatPrompt("system", "Conversation so far:", "")
    queued.prefetch(prompt, "x")
    deadline = time.monotonic() + 5
    while not model.prepared and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(model.prepared) == 1
    from pydantic import BaseModel

    class Nothing(BaseModel):
        pass

    turn = threading.Thread(target=queued.extract, args=(ChatPrompt("s", "Customer (latest message): {}", ""), Nothing))
    turn.start()
    assert model.busy.wait(5)
    queued.prefetch(prompt, "x")  # a turn is running: nothing is queued behind or ahead of it
    model.release.set()
    turn.join(5)
    time.sleep(0.1)
    assert len(model.prepared) == 1
    queued.shutdown()


@pytest.mark.model
def test_the_next_turn_evaluates_only_the_customers_words_and_the_task(embedded_model, card_policy,
                                                                       store: Store) -> None:
    agent = Agent(card_policy, embedded_model, store, tools=card_policy.make_tools())
    cid = agent.start()
    agent.respond(cid, "Hi, I lost my card yesterday")
    prepared = agent.prepare_next(cid)
    assert prepared is not None and prepared.prompt_tokens - prepared.reused_tokens >= 20  # the agent's reply
    seen: list[CallStats] = []
    original = embedded_model.extract

    def extract(prompt: ChatPrompt, schema: Any) -> Extraction:
        result = original(prompt, schema)
        seen.append(result.stats)
        return result

    embedded_model.extract = extract  # type: ignore[method-assign]
    try:
        result = agent.respond(cid, "my card ends 4821 and I was born on 14 March 1985")
    finally:
        del embedded_model.extract
    assert result.response_id == "confirm_block"
    assert seen[0].reused_tokens >= prepared.prompt_tokens - 2
    from sopagent import prompts

    task = prompts.extraction_prompt("", "", card_policy.steps["verify_identity"].facts).task
    message_and_task = len(embedded_model.llama.tokenize(("Customer (latest message): my card ends 4821 and I was "
                                                          "born on 14 March 1985\n\n" + task).encode()))
    assert seen[0].prompt_tokens - seen[0].reused_tokens <= message_and_task + 12  # chat-template tokens
