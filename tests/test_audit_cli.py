"""`sopagent audit` end to end on a real SQLite file: exit codes of verify and of replay's CI mode."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

from test_audit_replay import FEE, ID_MARIA, OK, _policy_with_limit

from sopagent.cli import main
from sopagent.engine import Agent
from sopagent.models.scripted import ScriptedModel
from sopagent.store import Store


def _record(card_policy, url: str) -> None:
    store = Store(url)
    for fee_type, choices in (("annual", [[0.3, 0.7]]), ("late payment", [])):
        agent = Agent(card_policy, ScriptedModel(facts=[FEE, ID_MARIA, {"fee_type": fee_type, "handoff": OK}],
                                                 choices=choices), store)
        cid = agent.start(customer_ref=f"cust-{fee_type}")
        agent.respond(cid, "I want a fee refunded")
        agent.respond(cid, "4821, born 14 March 1985")
        agent.respond(cid, f"the {fee_type} fee")
    store.engine.dispose()


def test_verify_exit_code_follows_the_chain(card_policy, tmp_path: Path, capsys) -> None:
    db = tmp_path / "audit.db"
    _record(card_policy, f"sqlite:///{db}")
    assert main(["audit", "verify", "--db", str(db)]) == 0
    # 6 decisions and 2 chained outcomes of their actions (a supervisor review, a refund)
    assert "chain verified: 8 records intact" in capsys.readouterr().out
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE decision SET response_id = 'fee_refunded' WHERE seq = 3")
    assert main(["audit", "verify", "--db", str(db)]) == 1
    assert "chain BROKEN at decision 3 (chain position 3)" in capsys.readouterr().out


def test_export_csv_opens_as_a_table(card_policy, tmp_path: Path, capsys) -> None:
    db = tmp_path / "audit.db"
    _record(card_policy, f"sqlite:///{db}")
    out = tmp_path / "late.csv"
    assert main(["audit", "export", "--db", str(db), "--customer", "cust-late payment", "--format", "csv",
                 "-o", str(out)]) == 0
    with open(out, newline="", encoding="utf-8-sig") as stream:
        rows = list(csv.DictReader(stream))
    decisions = [r for r in rows if r["kind"] == "decision"]
    assert [r["customer_text"] for r in decisions] == ["I want a fee refunded", "4821, born 14 March 1985",
                                                       "the late payment fee"]
    refund = json.loads(decisions[2]["effects"])
    assert [(e["name"], e["status"], e["arguments"]["amount"]) for e in refund] == [("refund_fee", "done", "25.00")]
    assert [r["action"] for r in rows if r["kind"] == "action"] == ["effects"]
    assert main(["audit", "show", "--db", str(db), "3"]) == 0
    shown = capsys.readouterr().out
    assert "fee_refund_supervisor_review" in shown
    assert "action request_supervisor_review(amount='95.00', customer_id='C1001', fee_type='annual'): done" in shown


def test_export_jsonl_lists_each_decisions_effects(card_policy, tmp_path: Path, capsys) -> None:
    db = tmp_path / "audit.db"
    _record(card_policy, f"sqlite:///{db}")
    assert main(["audit", "export", "--db", str(db), "--format", "jsonl"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    decisions = [r for r in records if r["kind"] == "decision"]
    assert [[e["name"] for e in r["effects"]] for r in decisions] == [
        [], [], ["request_supervisor_review"], [], [], ["refund_fee"]]
    assert all(e["status"] == "done" and e["idempotency_key"].startswith("sopa-") and e["result"]
               for r in decisions for e in r["effects"])


def test_replay_blocks_a_change_above_the_allowed_share(card_policy, tmp_path: Path, capsys) -> None:
    db = tmp_path / "audit.db"
    _record(card_policy, f"sqlite:///{db}")
    changed = _policy_with_limit(tmp_path, "100.00").source_path
    assert main(["audit", "replay", "--db", str(db), "--policy", str(changed), "--max-changed-share", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "affects 16.7% of 6 past turns" in out and "fee_refund_supervisor_review [sent] -> fee_refunded" in out
    assert main(["audit", "replay", "--db", str(db), "--policy", str(changed), "--max-changed-share", "0.1"]) == 1
    assert main(["audit", "replay", "--db", str(db), "--policy", "#1", "--max-changed-share", "0"]) == 0
