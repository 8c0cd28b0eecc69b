"""The anchored chain: a database writer who rewrites a record and recomputes every later hash passes
the self-consistency check, but not the signed checkpoints kept outside the database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from postgres import fresh_postgres_url, postgres_server, postgres_url  # noqa: F401 (fixtures)
from sqlmodel import select

from sopagent.audit.anchor import generate_key, verify_checkpoints, write_checkpoint
from sopagent.engine import Agent
from sopagent.errors import AnchorError
from sopagent.models.scripted import ScriptedModel
from sopagent.store import ChainHead, Decision, OperatorAction, Store
from sopagent.store.chain import row_hash

OK = "not_requested"
FEE = {"intent": "fee_refund", "handoff": OK}
ID_MARIA = {"card_last4": "4821", "date_of_birth": "1985-03-14", "handoff": OK}


def _conversation(card_policy, store: Store, turns: int) -> None:
    model = ScriptedModel(facts=[FEE, ID_MARIA, {"fee_type": "late payment", "handoff": OK}][:turns])
    agent = Agent(card_policy, model, store)
    cid = agent.start(customer_ref="cust-anchor")
    for text in ("refund my fee", "4821, 14 March 1985", "the late payment fee")[:turns]:
        agent.respond(cid, text)


def _forge(store: Store, decision_id: int, response_id: str) -> None:
    """What a database writer can do: change a record and recompute every later hash and the head."""
    with store.session() as session:
        rows = sorted([*session.exec(select(Decision)).all(), *session.exec(select(OperatorAction)).all()],
                      key=lambda row: row.seq)
        prev = rows[0].prev_hash
        for row in rows:
            if isinstance(row, Decision) and row.id == decision_id:
                row.response_id = response_id
            row.prev_hash, row.hash = prev, row_hash(prev, row)
            prev = row.hash
            session.add(row)
        head = session.get(ChainHead, 1)
        head.last_hash = prev
        session.add(head)
        session.commit()


@pytest.fixture(params=["sqlite", "postgres"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """The audit store on SQLite, or on a fresh database of the suite's PostgreSQL server."""
    if request.param == "sqlite":
        return Store(f"sqlite:///{tmp_path / 'audit.db'}")
    return Store(request.getfixturevalue("fresh_postgres_url"))


def test_a_rewritten_and_rehashed_chain_fails_against_its_checkpoints(card_policy, any_store: Store,
                                                                       tmp_path: Path) -> None:
    store = any_store
    key = tmp_path / "keys" / "anchor.key"
    key.parent.mkdir()
    public = generate_key(key)
    assert os.stat(key).st_mode & 0o777 == 0o600
    with pytest.raises(AnchorError, match="never overwritten"):
        generate_key(key)
    checkpoints = tmp_path / "checkpoints"
    _conversation(card_policy, store, 2)
    first = write_checkpoint(store, key, checkpoints)
    assert first is not None and write_checkpoint(store, key, checkpoints) is None  # nothing new to sign
    _conversation(card_policy, store, 3)
    second = write_checkpoint(store, key, checkpoints)
    listed = json.loads(second.read_text())
    assert listed["first_seq"] == json.loads(first.read_text())["last_seq"] + 1
    assert verify_checkpoints(store, public, checkpoints).anchored

    victim = store.decisions()[1]
    _forge(store, victim.id, "handoff_to_human")
    assert store.verify_chain().intact  # self-consistent again: the hashes alone cannot tell
    report = verify_checkpoints(store, public, checkpoints)
    assert not report.anchored
    assert report.problems[0].startswith(f"decision #{victim.id} (seq {victim.seq}) no longer matches {first.name}")


def test_a_checkpoint_changed_or_signed_by_another_key_is_refused(card_policy, store: Store, tmp_path: Path) -> None:
    key, other = tmp_path / "anchor.key", tmp_path / "other.key"
    public, other_public = generate_key(key), generate_key(other)
    _conversation(card_policy, store, 2)
    path = write_checkpoint(store, key, tmp_path / "checkpoints")
    assert "not signed by this key" in verify_checkpoints(store, other_public, path).problems[0]
    data = json.loads(path.read_text())
    data["records"][0][1] = "0" * 64
    os.chmod(path, 0o644)
    path.write_text(json.dumps(data))
    assert "not signed by this key" in verify_checkpoints(store, public, path).problems[0]


def test_audit_verify_says_when_the_chain_is_only_self_consistent(card_policy, store: Store, tmp_path: Path) -> None:
    key = tmp_path / "anchor.key"
    public = generate_key(key)
    _conversation(card_policy, store, 3)
    db = str(store.engine.url)
    run = [sys.executable, "-m", "sopagent.cli", "audit"]
    made = subprocess.run([*run, "checkpoint", "--db", db, "--key", str(key), "--out", str(tmp_path / "cp")],
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0 and "checkpoint written" in made.stdout, made.stderr
    plain = subprocess.run([*run, "verify", "--db", db], capture_output=True, text=True, timeout=60)
    assert plain.returncode == 0 and "unanchored" in plain.stdout
    _forge(store, store.decisions()[0].id, "handoff_to_human")
    anchored = subprocess.run([*run, "verify", "--db", db, "--checkpoints", str(tmp_path / "cp"),
                               "--public-key", str(public)], capture_output=True, text=True, timeout=60)
    assert anchored.returncode == 1 and "no longer matches" in anchored.stdout, anchored.stdout + anchored.stderr


def test_the_service_writes_a_checkpoint_every_n_records(tmp_path: Path) -> None:
    import time

    from server_harness import CARD, LOST, say, serve_in_thread
    from server_harness import ID_MARIA as ID

    from sopagent.server.config import ServeConfig

    key = tmp_path / "anchor.key"
    public = generate_key(key)
    directory = tmp_path / "checkpoints"
    config = ServeConfig(policies=[CARD], db=f"sqlite:///{tmp_path / 'audit.db'}", model="echo",
                         anchor_key=str(key), checkpoint_dir=str(directory), checkpoint_every=2)
    for live in serve_in_thread(config):
        with live.client() as client:
            cid = client.post("/v1/conversations", json={"policy": "card_services"}).json()["conversation_id"]
            client.post(f"/v1/conversations/{cid}/messages", json={"text": say(LOST)})
            assert not list(directory.glob("checkpoint-*.json"))  # one record: not due yet
            client.post(f"/v1/conversations/{cid}/messages", json={"text": say(ID)})
        deadline = time.monotonic() + 10
        while not list(directory.glob("checkpoint-*.json")) and time.monotonic() < deadline:
            time.sleep(0.05)  # written after the response, in the background
        assert verify_checkpoints(live.service.store, public, directory).records >= 2
        assert verify_checkpoints(live.service.store, public, directory).anchored
