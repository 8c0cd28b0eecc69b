"""Tampering with the audit chain is found and named, on real SQLite and a real PostgreSQL server."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlmodel import Session

from sopagent.engine import Agent
from sopagent.models.scripted import ScriptedModel
from sopagent.operations import Operations
from sopagent.store import Decision, OperatorAction, Store
from sopagent.store.chain import seal
from sopagent.store.verify import verify_engine

OK = "not_requested"
FEE = {"intent": "fee_refund", "handoff": OK}
ID_MARIA = {"card_last4": "4821", "date_of_birth": "1985-03-14", "handoff": OK}


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request, tmp_path) -> Store:
    """A fresh store on SQLite, then on PostgreSQL."""
    if request.param == "sqlite":
        return Store(f"sqlite:///{tmp_path / 'audit.db'}")
    return Store(request.getfixturevalue("postgres_url"))


def _history(card_policy, store: Store) -> str:
    """Six chained rows: two decisions, a pause and a resume by an operator, one more decision and the
    outcome of its fee refund (an ``effects`` row)."""
    agent = Agent(card_policy, ScriptedModel(facts=[FEE, ID_MARIA, {"fee_type": "late payment", "handoff": OK}]),
                  store)
    cid = agent.start(customer_ref="cust-7")
    agent.respond(cid, "I was charged a fee")
    agent.respond(cid, "4821, 14 March 1985")
    ops = Operations(store, "ana")
    ops.pause(cid, reason="checking")
    ops.resume(cid)
    refunded = agent.respond(cid, "the late payment fee")
    assert [e["status"] for e in refunded.effects] == ["done"]
    assert store.verify_chain().intact
    return cid


def _sql(store: Store, statement: str, **params) -> None:
    with store.engine.begin() as conn:
        conn.execute(text(statement), params)


def test_intact_chain_verifies_on_both_paths(card_policy, any_store: Store) -> None:
    _history(card_policy, any_store)
    sequential = verify_engine(any_store.engine, workers=1)
    parallel = verify_engine(any_store.engine, workers=2)
    assert sequential.intact and parallel.intact and sequential.checked == parallel.checked == 6


def test_edited_row_is_named(card_policy, any_store: Store) -> None:
    _history(card_policy, any_store)
    _sql(any_store, "UPDATE decision SET customer_text = 'I never said this' WHERE seq = 2")
    for workers in (1, 2):
        report = verify_engine(any_store.engine, workers=workers)
        assert (report.intact, report.broken_kind, report.broken_seq) == (False, "decision", 2)
        assert "personal content" in (report.reason or "")


def test_edited_public_field_of_an_action_is_named(card_policy, any_store: Store) -> None:
    _history(card_policy, any_store)
    _sql(any_store, "UPDATE operatoraction SET operator = 'mallory' WHERE seq = 3")
    report = any_store.verify_chain()
    assert (report.broken_kind, report.broken_seq) == ("action", 3) and "recorded fields" in (report.reason or "")


def test_deleted_row_is_named(card_policy, any_store: Store) -> None:
    _history(card_policy, any_store)
    _sql(any_store, "DELETE FROM operatoraction WHERE seq = 3")
    for workers in (1, 2):
        report = verify_engine(any_store.engine, workers=workers)
        assert not report.intact and report.broken_seq == 4 and "deleted or inserted" in (report.reason or "")


def test_inserted_row_is_named(card_policy, any_store: Store) -> None:
    """A forged row sealed correctly into position 2 (later rows moved up) still breaks the next link."""
    _history(card_policy, any_store)
    for seq in (5, 4, 3, 2):
        table = "operatoraction" if seq in (3, 4) else "decision"
        _sql(any_store, f"UPDATE {table} SET seq = seq + 1 WHERE seq = :s", s=seq)
    with Session(any_store.engine) as session:
        first = session.get(Decision, 1)
        forged = OperatorAction(operator="mallory", action="approve", conversation_id=first.conversation_id,
                                created_at=first.created_at)
        seal(forged, first.hash, 2)
        session.add(forged)
        session.commit()
    _sql(any_store, "UPDATE chainhead SET length = 6")
    for workers in (1, 2):
        report = verify_engine(any_store.engine, workers=workers)
        assert not report.intact and report.broken_seq == 3 and "prev_hash" in (report.reason or "")


def test_reordered_rows_are_named(card_policy, any_store: Store) -> None:
    _history(card_policy, any_store)
    _sql(any_store, "UPDATE decision SET seq = 100 WHERE seq = 2")
    _sql(any_store, "UPDATE operatoraction SET seq = 2 WHERE seq = 3")
    _sql(any_store, "UPDATE decision SET seq = 3 WHERE seq = 100")
    for workers in (1, 2):
        report = verify_engine(any_store.engine, workers=workers)
        assert not report.intact and report.broken_seq == 2 and "prev_hash" in (report.reason or "")


def test_altered_policy_snapshot_and_truncated_tail(card_policy, any_store: Store) -> None:
    _history(card_policy, any_store)
    _sql(any_store, "DELETE FROM operatoraction WHERE seq = 6")  # the last row: the fee refund's outcome
    report = any_store.verify_chain()
    assert report.broken_kind == "chain_head" and "removed from the end" in (report.reason or "")
    _sql(any_store, "UPDATE policyversion SET modules_json = replace(modules_json, 'def ', 'def  ')")
    report = any_store.verify_chain()
    assert report.broken_kind == "policy_version" and report.broken_seq == 1


def test_policy_version_stores_helper_modules(card_policy, store: Store) -> None:
    import json

    Agent(card_policy, ScriptedModel(), store)
    with Session(store.engine) as session:
        from sopagent.store import PolicyVersion

        version = session.get(PolicyVersion, 1)
    modules = json.loads(version.modules_json)["modules"]
    assert list(modules) == ["northbank_backend"]
    assert "class NorthbankDemo" in modules["northbank_backend"]["source"] and version.modules_sha256
