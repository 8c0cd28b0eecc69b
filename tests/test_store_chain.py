"""The audit chain on a real SQLite file: operator actions chain with decisions; tampering is found."""

from __future__ import annotations

import pytest
from sqlmodel import Session, select

from sopagent.engine import Agent
from sopagent.errors import ConversationError, StoreError
from sopagent.models.scripted import ScriptedModel
from sopagent.store import Decision, OperatorAction, PolicyVersion, Store
from sopagent.store.tables import ChainHead

FEE = {"intent": "fee_refund", "handoff": "not_requested"}


def _two_turns(card_policy, store: Store) -> str:
    agent = Agent(card_policy, ScriptedModel(facts=[FEE, {"card_last4": "4821", "date_of_birth": "1985-03-14",
                                                          "handoff": "not_requested"}]), store)
    cid = agent.start(customer_ref="cust-1")
    agent.respond(cid, "I was charged a fee")
    agent.respond(cid, "4821, 14 March 1985")
    return cid


def test_actions_and_decisions_share_one_chain(card_policy, store: Store) -> None:
    cid = _two_turns(card_policy, store)
    conversation = store.get_conversation(cid)
    conversation.status = "paused"
    store.append_action(OperatorAction(operator="ana", action="pause", conversation_id=cid, reason="checking"),
                        conversation)
    rows = store.transcript(cid)
    assert [r.seq for r in rows] == [1, 2, 3]
    assert isinstance(rows[2], OperatorAction) and rows[2].prev_hash == rows[1].hash
    assert store.get_conversation(cid).status == "paused"
    report = store.verify_chain()
    assert report.intact and report.checked == 3


def test_a_pending_decision_can_be_settled_only_once(card_policy, store: Store) -> None:
    cid = _two_turns(card_policy, store)
    decision = store.decisions(cid)[-1]
    store.append_action(OperatorAction(operator="ana", action="approve", conversation_id=cid,
                                       decision_id=decision.id))
    with pytest.raises(ConversationError, match="already handled: approve by ana"):
        store.append_action(OperatorAction(operator="bo", action="override", conversation_id=cid,
                                           decision_id=decision.id))
    assert store.resolution(decision.id).operator == "ana"
    assert store.verify_chain().intact


def _tamper(store: Store, table, row_id: int, **changes) -> None:
    with Session(store.engine) as session:
        row = session.get(table, row_id)
        for name, value in changes.items():
            setattr(row, name, value)
        session.add(row)
        session.commit()


@pytest.mark.parametrize("change,reason", [
    ({"customer_text": "edited"}, "personal content"),
    ({"response_id": "a_different_reply"}, "recorded fields"),
    ({"erased_at": "2026-01-01", "customer_text": None, "salt": None}, "without a recorded erase"),
])
def test_edited_decision_is_named(card_policy, store: Store, change: dict, reason: str) -> None:
    _two_turns(card_policy, store)
    _tamper(store, Decision, 1, **change)
    report = store.verify_chain()
    assert not report.intact and report.broken_id == 1 and reason in (report.reason or "")


def test_deleted_reordered_and_truncated_rows_are_found(card_policy, store: Store) -> None:
    _two_turns(card_policy, store)
    _two_turns(card_policy, store)
    with Session(store.engine) as session:
        session.delete(session.get(Decision, 2))
        session.commit()
    report = store.verify_chain()
    assert not report.intact and report.broken_seq == 3 and "deleted or inserted" in (report.reason or "")

    with Session(store.engine) as session:  # renumber to hide the gap: the prev_hash link still breaks
        for row in session.exec(select(Decision).where(Decision.seq > 2).order_by(Decision.seq)).all():
            row.seq -= 1
            session.add(row)
            session.flush()
        session.commit()
    report = store.verify_chain()
    assert not report.intact and report.broken_seq == 2 and "prev_hash" in (report.reason or "")


def test_truncated_tail_and_altered_policy_snapshot(card_policy, store: Store) -> None:
    _two_turns(card_policy, store)
    with Session(store.engine) as session:
        session.delete(session.get(Decision, 2))
        session.commit()
    report = store.verify_chain()
    assert not report.intact and report.broken_kind == "chain_head"

    other = Store(store.url.replace("audit.db", "other.db"))
    _two_turns(card_policy, other)
    _tamper(other, PolicyVersion, 1, source="# rewritten\n")
    report = other.verify_chain()
    assert not report.intact and report.broken_kind == "policy_version"


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_processes_opening_a_new_database_at_once_create_it_once(backend: str, request: pytest.FixtureRequest,
                                                                 tmp_path) -> None:
    # Workers of `sopagent serve --workers N` open the same new database at the same moment. The race
    # is timing-dependent (without the fix SQLite failed about 1 round in 20 with 8 openers, PostgreSQL
    # most rounds), so SQLite runs several rounds, each on a new file.
    import concurrent.futures
    import threading

    openers = 8
    rounds = 1 if backend == "postgresql" else 12
    for round_number in range(rounds):
        url = (request.getfixturevalue("fresh_postgres_url") if backend == "postgresql"
               else f"sqlite:///{tmp_path}/new-{round_number}.db")
        barrier = threading.Barrier(openers)

        def open_store(_: int, url: str = url, barrier: threading.Barrier = barrier) -> int:
            barrier.wait()
            return Store(url).verify_chain().checked

        with concurrent.futures.ThreadPoolExecutor(openers) as pool:
            assert list(pool.map(open_store, range(openers))) == [0] * openers
        with Store(url).session() as session:
            assert len(session.exec(select(ChainHead)).all()) == 1


def test_a_sqlite_database_in_a_missing_folder_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(StoreError, match="does not exist") as caught:
        Store(f"sqlite:///{tmp_path}/no-such-folder/audit.db")
    assert "fix:" in str(caught.value)
    assert not (tmp_path / "no-such-folder").exists()


def test_a_new_sqlite_audit_file_and_its_journal_are_private(tmp_path) -> None:
    import stat

    from sopagent.store import Store

    store = Store(f"sqlite:///{tmp_path / 'private.db'}")
    store.verify_chain()
    files = [p for p in tmp_path.glob("private.db*") if not p.name.endswith(".lock")]
    assert files and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files), \
        {p.name: oct(p.stat().st_mode) for p in files}
