"""Audit queries, explanations, exports that round-trip, and erasure that leaves no trace in the file."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from sopagent.audit.erase import erase_customer, purge_older_than
from sopagent.audit.explain import explain_decision
from sopagent.audit.export import read_csv, read_jsonl, record, write_csv, write_jsonl
from sopagent.audit.query import AuditFilter, select_rows
from sopagent.engine import Agent
from sopagent.errors import ConversationError
from sopagent.models.scripted import ScriptedModel
from sopagent.operations import Operations
from sopagent.store import Decision, OperatorAction, Store

OK = "not_requested"
FEE = {"intent": "fee_refund", "handoff": OK}
ID_MARIA = {"card_last4": "4821", "date_of_birth": "1985-03-14", "handoff": OK}
SECRET = "Quillonbeck Zarathustrine"


def _two_customers(card_policy, store: Store) -> tuple[str, str]:
    model = ScriptedModel(facts=[FEE, ID_MARIA, {"fee_type": "annual", "handoff": OK}, FEE],
                          choices=[[0.45, 0.55]])
    agent = Agent(card_policy, model, store, confidence_threshold=0.6)
    maria = agent.start(customer_ref="cust-maria")
    agent.respond(maria, f"I was charged a fee, my name is {SECRET}")
    agent.respond(maria, "4821, 14 March 1985")
    pending = agent.respond(maria, f"the annual fee please, {SECRET} again")
    Operations(store, "ana").override(pending.decision_id, 0, reason="policy says explain")
    other = agent.start(customer_ref="cust-other")
    agent.respond(other, "refund a fee")
    return maria, other


def test_filters_select_the_right_rows(card_policy, store: Store) -> None:
    maria, other = _two_customers(card_policy, store)
    assert {r.conversation_id for r in select_rows(store, AuditFilter(customer="cust-maria"))} == {maria}
    pending = select_rows(store, AuditFilter(status="pending"))
    assert [r.response_id for r in pending] == ["fee_refund_supervisor_review"]
    by_ana = select_rows(store, AuditFilter(operator="ana"))
    assert [(type(r).__name__, r.action) for r in by_ana] == [("OperatorAction", "override")]
    assert len(select_rows(store, AuditFilter(policy="card_services", policy_version="1.0"))) == 4
    assert select_rows(store, AuditFilter(until="2000-01-01")) == []
    assert [r.seq for r in select_rows(store, AuditFilter())] == [1, 2, 3, 4, 5]


def test_show_explains_a_decision(card_policy, store: Store) -> None:
    _two_customers(card_policy, store)
    text = explain_decision(store, 3)
    assert "step 'fee_refund'" in text and "chosen by the model: fee_refund_supervisor_review" in text
    assert "45.0%" in text and "55.0%" in text and "policy card_services 1.0 (stored version #1" in text
    assert "then override by operator ana" in text and "latency ms:" in text
    with pytest.raises(ConversationError, match="does not exist"):
        explain_decision(store, 99)


def test_exports_round_trip(card_policy, store: Store, tmp_path: Path) -> None:
    _two_customers(card_policy, store)
    rows = select_rows(store, AuditFilter())
    expected = [record(r) for r in rows]
    with open(tmp_path / "audit.csv", "w", newline="", encoding="utf-8") as stream:
        assert write_csv(rows, stream) == 5
    with open(tmp_path / "audit.csv", newline="", encoding="utf-8") as stream:
        assert read_csv(stream) == expected
    buffer = io.StringIO()
    write_jsonl(rows, buffer)
    buffer.seek(0)
    assert read_jsonl(buffer) == expected
    assert expected[2]["customer_text"].endswith(f"{SECRET} again") and "\n" not in buffer.getvalue().split("\n")[0]


def test_erasure_leaves_no_trace_and_the_chain_verifies(card_policy, store: Store, tmp_path: Path) -> None:
    maria, other = _two_customers(card_policy, store)
    db = tmp_path / "audit.db"
    assert SECRET.encode() in b"".join(p.read_bytes() for p in tmp_path.glob("audit.db*"))
    result = erase_customer(store, "cust-maria", "dpo", "GDPR request 2026-114")
    assert len(result.decisions) == 3 and len(result.actions) == 1 and result.conversations == [maria]
    for path in tmp_path.glob("audit.db*"):  # the file, and any WAL or shared-memory file beside it
        raw = path.read_bytes()
        assert SECRET.encode() not in raw and b"cust-maria" not in raw, path
    assert db.exists()
    report = store.verify_chain()
    assert report.intact and report.checked == 6, report.describe()
    erased = store.decisions(maria)
    assert all(d.customer_text is None and d.erased_at for d in erased)
    assert store.decisions(other)[0].customer_text == "refund a fee"
    action = store.actions()[-1]
    assert action.action == "erase" and json.loads(action.detail_json)["decisions"] == [d.id for d in erased]
    assert "erased at" in explain_decision(store, erased[0].id)
    with pytest.raises(ConversationError, match="no conversation has customer reference"):
        erase_customer(store, "cust-maria", "dpo", "again")


def test_purge_clears_old_content_as_a_chained_action(card_policy, store: Store) -> None:
    _two_customers(card_policy, store)
    assert purge_older_than(store, 1, "ops").action_id is None  # nothing is a day old yet
    result = purge_older_than(store, 0, "ops", "retention test")
    assert len(result.decisions) == 4 and len(result.actions) == 1
    assert store.verify_chain().intact
    assert store.actions()[-1].action == "purge"
    with pytest.raises(ConversationError, match="reason"):
        erase_customer(store, "cust-other", "dpo", " ")


def test_clearing_without_a_recorded_action_breaks_the_chain(card_policy, store: Store) -> None:
    _two_customers(card_policy, store)
    from sqlalchemy import text

    with store.engine.begin() as conn:
        conn.execute(text("UPDATE decision SET customer_text=NULL, salt=NULL, erased_at='2026-01-01' WHERE id = 2"))
    report = store.verify_chain()
    assert not report.intact and report.broken_id == 2 and "without a recorded erase" in (report.reason or "")
    assert isinstance(store.decisions()[0], Decision) and OperatorAction


def test_an_unusable_model_answer_is_personal_content_never_the_public_error(card_policy, store: Store,
                                                                             tmp_path: Path) -> None:
    from sopagent.errors import ModelError
    from sopagent.grounding import MODEL_OUTPUT

    written = '{"card_last4": "4821", "date_of_birth": "1985-02-30", "intent": "' + SECRET + '"}'
    model = ScriptedModel(facts=[ModelError("the facts did not validate against Request: Input should be "
                                            "'lost_or_stolen_card', ... at intent", model_output=written)])
    agent = Agent(card_policy, model, store)
    cid = agent.start(customer_ref="cust-quill")
    result = agent.respond(cid, f"{SECRET} here, born 30 Feb 1985")
    assert result.status == "escalated" and "ModelError" in (result.error or "")
    assert SECRET not in (result.error or "") and "1985" not in (result.error or "")  # what a webhook is sent
    decision = store.decisions(cid)[-1]
    assert SECRET not in (decision.error or "") and json.loads(decision.facts_json)[MODEL_OUTPUT] == written
    assert "the model's unusable answer" in explain_decision(store, decision.id)
    erase_customer(store, "cust-quill", "dpo", "GDPR request 2026-201")
    for path in tmp_path.glob("audit.db*"):
        raw = path.read_bytes()
        for value in (SECRET, "1985-02-30", "cust-quill", "born 30 Feb"):
            assert value.encode() not in raw, (path, value)
