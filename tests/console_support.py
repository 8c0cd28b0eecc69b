"""Fixed data for the console tests: real turns through the engine on a real SQLite store,
with a fixed clock so timestamps, latencies and ids are stable (SVG snapshots depend on it)."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any, Callable

import pytest

from sopagent import Agent, ScriptedModel, Store
from sopagent.store import Conversation

OK = "not_requested"
FEE = {"intent": "fee_refund", "handoff": OK}
ID_MARIA = {"card_last4": "4821", "date_of_birth": "1985-03-14", "handoff": OK}
DISPUTE = {"payment_date": "2026-11-15", "amount": 899.0, "merchant": "Techland Store", "handoff": OK}

FEE_ID = "c0ffee00-0000-4000-8000-000000000001"
DISPUTE_ID = "d15a0000-0000-4000-8000-000000000002"
LOST_ID = "10570000-0000-4000-8000-000000000003"
UNCLEAR_ID = "0c1ea400-0000-4000-8000-000000000004"

# conversation id, customer, model script (facts, choices), confidence threshold, messages
CONVERSATIONS: list[tuple[str, str, list[Any], list[Any], float, list[str]]] = [
    (LOST_ID, "cust-1003", [{"intent": "lost_or_stolen_card", "handoff": OK}, ID_MARIA], [], 0.0,
     ["I lost my card", "4821, born 14 March 1985"]),
    (UNCLEAR_ID, "cust-1004", [{"intent": "something_else", "handoff": OK}], [[0.8, 0.2]], 0.0,
     ["can you help me with my mortgage?"]),
    (DISPUTE_ID, "cust-1002", [{"intent": "dispute_payment", "handoff": OK}, ID_MARIA, DISPUTE], [], 0.0,
     ["I want to dispute a payment", "4821 1985-03-14", "899 euros at Techland Store on 15 November"]),
    (FEE_ID, "cust-1001", [FEE, ID_MARIA, {"fee_type": "annual", "handoff": OK}], [[0.45, 0.55]], 0.6,
     ["please refund a fee", "4821, 14 March 1985", "the annual fee, it was your mistake"]),
]


def fixed_clock(start: dt.datetime = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.timezone.utc),
                step_s: int = 37) -> Callable[[], str]:
    """A utcnow replacement that advances ``step_s`` seconds per call."""
    counter = itertools.count()
    return lambda: (start + dt.timedelta(seconds=step_s * next(counter))).isoformat(timespec="microseconds")


def seed(store: Store, policy: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Write the four fixed conversations (two of them waiting for approval); return customer -> id."""
    clock = fixed_clock()
    ticks = itertools.count()
    ids: dict[str, str] = {}
    with monkeypatch.context() as patch:
        patch.setattr("sopagent.engine.utcnow", clock)
        patch.setattr("sopagent.operations.utcnow", clock)
        patch.setattr("sopagent.engine.time.perf_counter", lambda: next(ticks) * 0.0041)
        for cid, customer, facts, choices, threshold, messages in CONVERSATIONS:
            agent = Agent(policy, ScriptedModel(facts=facts, choices=choices), store,
                          confidence_threshold=threshold)
            now = clock()
            store.create_conversation(Conversation(
                id=cid, policy_name=policy.name, policy_version_id=agent.policy_version.id or 0,
                customer_ref=customer, step=policy.start, created_at=now, updated_at=now))
            for text in messages:
                agent.respond(cid, text)
            ids[customer] = cid
    return ids


def patch_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Operator actions in a test get fixed, increasing timestamps too."""
    monkeypatch.setattr("sopagent.operations.utcnow",
                        fixed_clock(dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.timezone.utc), 11))
