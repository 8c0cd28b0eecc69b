"""Replaying recorded conversations under a changed policy alters exactly the turns it should."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sopagent.audit.replay import load_policy_spec, replay
from sopagent.engine import Agent
from sopagent.models.scripted import ScriptedModel
from sopagent.policy import load_policy
from sopagent.store import Store

ROOT = Path(__file__).resolve().parent.parent
OK = "not_requested"
FEE = {"intent": "fee_refund", "handoff": OK}
ID_MARIA = {"card_last4": "4821", "date_of_birth": "1985-03-14", "handoff": OK}


def _record(card_policy, store: Store) -> dict[str, int]:
    """Two fee conversations: the annual fee (95.00, above the 50.00 limit) and the late fee (25.00)."""
    ids = {}
    for fee_type, choices in (("annual", [[0.3, 0.7]]), ("late payment", [])):
        model = ScriptedModel(facts=[FEE, ID_MARIA, {"fee_type": fee_type, "handoff": OK},
                                     {"intent": "nothing_else", "handoff": OK}], choices=choices)
        agent = Agent(card_policy, model, store)
        cid = agent.start(customer_ref=f"cust-{fee_type}")
        agent.respond(cid, "I want a fee refunded")
        agent.respond(cid, "4821, born 14 March 1985")
        ids[fee_type] = agent.respond(cid, f"the {fee_type} fee").decision_id
        agent.respond(cid, "that's all, bye")
    return ids


def _policy_with_limit(tmp_path: Path, limit: str):
    """A copy of the card policy (with its helper module, data and catalog) with another refund limit."""
    shutil.copytree(ROOT / "policies", tmp_path / "policies")
    shutil.copytree(ROOT / "catalogs", tmp_path / "catalogs")
    path = tmp_path / "policies" / "card_services.py"
    source = path.read_text()
    assert 'FEE_REFUND_LIMIT = Decimal("50.00")' in source
    path.write_text(source.replace('FEE_REFUND_LIMIT = Decimal("50.00")', f'FEE_REFUND_LIMIT = Decimal("{limit}")'))
    return load_policy(path)


def _no_model():
    pytest.fail("the model was called although no model input changed")


def test_same_policy_changes_nothing_and_calls_no_model(card_policy, store: Store) -> None:
    _record(card_policy, store)
    report = replay(store, card_policy, model_factory=_no_model)
    assert report.turns == 8 and report.changes == [] and report.model_calls == 0
    stored = replay(store, load_policy_spec(store, "#1"), model_factory=_no_model)  # from the stored snapshot
    assert stored.turns == 8 and stored.changes == []


def test_raised_limit_changes_exactly_the_annual_fee_turn(card_policy, store: Store, tmp_path: Path) -> None:
    ids = _record(card_policy, store)
    model = ScriptedModel(facts=[{"intent": "nothing_else", "handoff": OK}])
    report = replay(store, _policy_with_limit(tmp_path, "100.00"), model_factory=lambda: model)
    # Only the turn after the changed reply has a new model input (the conversation so far differs).
    assert report.turns == 8 and report.model_calls == 1 and report.reused == 7
    assert "I have refunded the annual fee" in model.prompts[0].context
    assert [c.decision_id for c in report.changes] == [ids["annual"]]
    change = report.changes[0]
    assert set(change.what) == {"allowed set", "choice", "reply", "effects"}
    assert change.recorded.startswith("fee_refund_supervisor_review") and change.replayed.startswith("fee_refunded")
    assert change.effects == [
        "would no longer request_supervisor_review(amount='95.00', customer_id='C1001', fee_type='annual')",
        "would now refund_fee(amount='95.00', customer_id='C1001', fee_type='annual')"]
    assert "affects 12.5% of 8 past turns" in report.summary() and "0 would now escalate" in report.summary()
    assert "1 would act differently on the account" in report.summary()


def test_lowered_limit_asks_the_model_only_where_the_choice_changed(card_policy, store: Store,
                                                                     tmp_path: Path) -> None:
    ids = _record(card_policy, store)
    calls: list[ScriptedModel] = []

    def factory() -> ScriptedModel:
        calls.append(ScriptedModel(facts=[{"intent": "nothing_else", "handoff": OK}], choices=[0]))
        return calls[0]

    report = replay(store, _policy_with_limit(tmp_path, "20.00"), model_factory=factory)
    assert [c.decision_id for c in report.changes] == [ids["late payment"]]
    assert report.changes[0].replayed.startswith("fee_refund_declined_amount")
    assert report.changes[0].effects == [
        "would no longer refund_fee(amount='25.00', customer_id='C1001', fee_type='late payment')"]
    assert report.model_calls == 2 and len(calls) == 1  # the new choice, then the next turn's new context
    assert "Which one best answers" in calls[0].prompts[0].task
