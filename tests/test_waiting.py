"""The customer's side of operator actions (`sopagent chat`'s watcher) on a real SQLite store."""

from __future__ import annotations

import io
import json
import time

from sopagent.chat.watcher import ResolutionWatcher
from sopagent.engine import Agent
from sopagent.models.scripted import ScriptedModel
from sopagent.operations import Operations
from sopagent.store import Store

FEE = {"intent": "fee_refund", "handoff": "not_requested"}


def _lines(out: io.StringIO, count: int, timeout_s: float = 10) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while len(out.getvalue().splitlines()) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return out.getvalue().splitlines()


def test_follow_prints_each_operator_reply_once_as_json(card_policy, store: Store) -> None:
    agent = Agent(card_policy, ScriptedModel(facts=[FEE]), store)
    cid = agent.start(customer_ref="cust-1")
    agent.respond(cid, "refund a fee")
    out = io.StringIO()
    watcher = ResolutionWatcher(store, out, interval_s=0.05, jsonl=True)
    watcher.follow(cid)
    ops = Operations(store, "ana")
    ops.take_over(cid, "customer asked for a person")  # not a reply: not printed
    first = ops.reply(cid, "ask_fee_type", {}, "")
    second = ops.reply(cid, "ask_identity", {}, "")
    lines = _lines(out, 2)
    time.sleep(0.3)  # a few more polls: nothing printed twice
    watcher.close()
    assert out.getvalue().splitlines() == lines
    assert [json.loads(line) for line in lines] == [
        {"operator_reply": first.id, "operator": "ana", "response_id": "ask_fee_type", "reply": first.sent_text},
        {"operator_reply": second.id, "operator": "ana", "response_id": "ask_identity", "reply": second.sent_text}]
