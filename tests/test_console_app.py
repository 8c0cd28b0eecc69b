"""The operator console driven with Pilot on a real SQLite store: widgets and the audit rows written."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from console_support import DISPUTE_ID, FEE_ID, LOST_ID, OK, patch_clock, seed
from sqlmodel import select
from textual.widgets import DataTable, Input, Static
from textual.worker import WorkerCancelled

from sopagent import Agent, ScriptedModel, Store, load_policy
from sopagent.console import create_app
from sopagent.console.screens.approvals import ApprovalsScreen
from sopagent.console.screens.audit import AuditScreen
from sopagent.console.screens.conversation import ConversationScreen
from sopagent.console.screens.conversations import ConversationsScreen
from sopagent.console.screens.dialogs import HelpScreen, ReplyDialog
from sopagent.console.screens.try_policy import TryPolicyScreen
from sopagent.operations import Operations
from sopagent.outbox import EffectRunner

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    """Textual runs on asyncio."""
    return "asyncio"


@pytest.fixture
def seeded(store: Store, card_policy: Any, monkeypatch: pytest.MonkeyPatch) -> Store:
    """The store with four fixed conversations, two waiting for approval."""
    seed(store, card_policy, monkeypatch)
    patch_clock(monkeypatch)
    return store


async def settle(pilot: Any) -> None:
    """Let workers finish and their results render."""
    for _ in range(3):
        try:
            await pilot.app.workers.wait_for_complete()
        except WorkerCancelled:  # an exclusive poll replaced by a newer one
            pass
        await pilot.pause()


def cell_texts(table: DataTable) -> list[list[str]]:
    """Every row of a table as plain strings."""
    return [[str(getattr(c, "plain", c)) for c in table.get_row_at(i)] for i in range(table.row_count)]


def screen_text(app: Any, selector: str) -> str:
    """The plain text of a Static on the current screen."""
    return str(app.screen.query_one(selector, Static).render())


async def test_list_shows_conversations_with_pending_counts_and_filters(seeded: Store) -> None:
    app = create_app(seeded, "ana", poll_interval=0)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        table = app.screen.query_one("#conversations", DataTable)
        rows = cell_texts(table)
        assert [r[0] for r in rows] == ["cust-1001", "cust-1002", "cust-1004", "cust-1003"]
        assert {r[0]: r[4] for r in rows} == {"cust-1001": "1", "cust-1002": "1", "cust-1004": "", "cust-1003": ""}
        assert rows[0][2:4] == ["fee_refund", "awaiting_approval"]
        await pilot.press("slash", *"1003")
        await settle(pilot)
        assert [r[0] for r in cell_texts(table)] == ["cust-1003"]
        assert screen_text(app, "#list-info") == "1 conversation"
        await pilot.press("escape", "f")  # clear the search, then only conversations waiting for approval
        await settle(pilot)
        assert [r[0] for r in cell_texts(table)] == ["cust-1001", "cust-1002"]
        assert "2 conversations, pending" in screen_text(app, "#list-info")


async def test_list_reads_a_page_and_the_next_one_at_its_last_row(seeded: Store) -> None:
    from sopagent.console.queries import LIST_PAGE
    from sopagent.store import Conversation

    with seeded.session() as session:
        version = session.exec(select(Conversation.policy_version_id)).first()
        for n in range(LIST_PAGE + 30):  # older than the seeded four
            session.add(Conversation(id=f"old-{n:04d}", policy_name="card_services", policy_version_id=version,
                                     customer_ref=f"old-{n:04d}", step="greet",
                                     updated_at=f"2020-01-01T00:{n // 60:02d}:{n % 60:02d}+00:00"))
        session.commit()
    total = LIST_PAGE + 34
    app = create_app(seeded, "ana", poll_interval=0)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        table = app.screen.query_one("#conversations", DataTable)
        assert table.row_count == LIST_PAGE
        assert f"{LIST_PAGE} of {total} conversations" in screen_text(app, "#list-info")
        await pilot.press("ctrl+end")  # to the last row shown: the next page is read
        await settle(pilot)
        assert table.row_count == total
        assert screen_text(app, "#list-info") == f"{total} conversations"
        assert cell_texts(table)[-1][0] == "old-0000"  # the oldest activity last


@pytest.mark.parametrize("screen_type", [ConversationsScreen, ApprovalsScreen, AuditScreen])
async def test_a_screen_reads_once_when_shown_and_polls_on_one_timer(seeded: Store, screen_type: Any,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # Textual calls on_mount of every class in the hierarchy: a screen that also called the base's
    # on_mount read the store twice on opening and polled on two timers.
    loads: list[str] = []
    original = screen_type.load
    monkeypatch.setattr(screen_type, "load", lambda self: loads.append("load") or original(self))
    app = create_app(seeded, "ana", poll_interval=30)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        if screen_type is not ConversationsScreen:
            await pilot.press("a" if screen_type is ApprovalsScreen else "u")
            await settle(pilot)
        assert isinstance(app.screen, screen_type)
        assert len(loads) == 1
        assert len([t for t in app.screen._timers if t._interval == 30]) == 1


async def test_list_updates_by_itself_when_an_agent_writes(seeded: Store, card_policy: Any) -> None:
    app = create_app(seeded, "ana", poll_interval=0.05)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        table = app.screen.query_one("#conversations", DataTable)
        assert table.row_count == 4
        agent = Agent(card_policy, ScriptedModel(facts=[{"intent": "complaint", "handoff": OK}], choices=[[0.7, 0.3]]),
                      Store(seeded.url))
        cid = agent.start(customer_ref="cust-new")
        agent.respond(cid, "I want to complain")
        for _ in range(40):
            await pilot.pause(0.05)
            if table.row_count == 5:
                break
        assert cell_texts(table)[0][0] == "cust-new"


async def test_conversation_shows_each_decision_in_detail(seeded: Store) -> None:
    app = create_app(seeded, "ana", poll_interval=0)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("enter")  # the first row: cust-1001
        await settle(pilot)
        assert isinstance(app.screen, ConversationScreen) and app.screen.conversation_id == FEE_ID
        text = screen_text(app, "#transcript")
        assert "the annual fee, it was your mistake" in text
        assert "fee_refund_declined_amount" in text and "45%" in text and "55%" in text
        assert "by model" in text and "model scripted" in text and "latency" in text
        assert "card_services 1.0" in text and "held for approval: The annual fee of €95.00" in text
        assert "1 waiting for approval" in screen_text(app, "#conversation-head")


async def test_approve_from_the_queue_writes_a_chained_action(seeded: Store) -> None:
    app = create_app(seeded, "ana", poll_interval=0)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("a")
        await settle(pilot)
        assert isinstance(app.screen, ApprovalsScreen)
        queue = app.screen.query_one("#queue", DataTable)
        assert [r[4] for r in cell_texts(queue)] == ["dispute_opened_large_credit", "fee_refund_supervisor_review"]
        await pilot.press("a", *"checked the account age", "enter")
        await settle(pilot)
        assert [r[4] for r in cell_texts(queue)] == ["fee_refund_supervisor_review"]
    action = seeded.actions(DISPUTE_ID)[-1]
    assert (action.action, action.operator, action.reason) == ("approve", "ana", "checked the account age")
    assert action.response_id == "dispute_opened_large_credit" and action.sent_text is None
    assert seeded.get_conversation(DISPUTE_ID).status == "active" and seeded.verify_chain().intact
    # The approval released the held action; the agent's process runs it and sends the reply it fills.
    [dispute] = seeded.effects(action.decision_id)
    assert (dispute.name, dispute.status) == ("open_dispute", "planned")
    bank = load_policy(Path(__file__).resolve().parent.parent / "policies" / "card_services.py").make_tools()
    run = EffectRunner(seeded, bank, "handoff_to_human").run_decision(action.decision_id)
    assert run is not None and not run.failed and "€899.00" in (run.reply or "")
    [dispute] = seeded.effects(action.decision_id)
    assert dispute.status == "done" and json.loads(dispute.result_json) in run.reply
    assert seeded.verify_chain().intact


async def test_override_sends_another_allowed_option(seeded: Store) -> None:
    app = create_app(seeded, "ana", poll_interval=0)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("enter")  # cust-1001, the fee refund held for low confidence
        await settle(pilot)
        await pilot.press("o", *"limit is 50", "enter", "enter")  # reason; the first option (index 0)
        await settle(pilot)
        assert "waiting for approval" not in screen_text(app, "#conversation-head")
        assert "override by ana" in screen_text(app, "#transcript")
    action = seeded.actions(FEE_ID)[-1]
    assert (action.action, action.response_id, action.reason) == ("override", "fee_refund_declined_amount",
                                                                  "limit is 50")


async def test_override_never_sends_the_option_the_agent_chose(seeded: Store) -> None:
    """Seen in tmux: Up from no highlight landed on the agent's own choice, recorded as an override."""
    app = create_app(seeded, "ana", poll_interval=0)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("enter")  # cust-1001: option 1 (supervisor review) chosen, held for approval
        await settle(pilot)
        await pilot.press("o", *"limit is 50", "enter", "up", "enter")
        await settle(pilot)
    action = seeded.actions(FEE_ID)[-1]
    assert (action.action, action.response_id) == ("override", "fee_refund_declined_amount")


async def test_escalate_marks_the_conversation(seeded: Store) -> None:
    app = create_app(seeded, "ana", poll_interval=0)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("a")
        await settle(pilot)
        await pilot.press("e", *"fraud team", "enter")
        await settle(pilot)
    assert seeded.actions(DISPUTE_ID)[-1].action == "escalate"
    assert seeded.get_conversation(DISPUTE_ID).status == "escalated"


async def test_second_console_cannot_approve_what_another_handled(seeded: Store) -> None:
    app = create_app(seeded, "ben", poll_interval=0)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("a")
        await settle(pilot)
        Operations(Store(seeded.url), "ana").approve(6, "first")  # another console, same database
        await pilot.press("a", "enter")
        await settle(pilot)
        messages = [n.message for n in app._notifications]
        assert any("already handled: approve by ana" in m for m in messages)
        assert [r[4] for r in cell_texts(app.screen.query_one("#queue", DataTable))] == [
            "fee_refund_supervisor_review"]
    assert [a.operator for a in seeded.actions(DISPUTE_ID) if a.action == "approve"] == ["ana"]


async def test_reply_reads_the_status_from_the_store_not_the_last_poll(seeded: Store) -> None:
    # Right after a take-over the screen may not have reloaded yet (CI once pressed `r` in that gap
    # and got "take it over first"); the store is what the reply is checked against.
    app = create_app(seeded, "ana", poll_interval=0)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        app.push_screen(ConversationScreen(LOST_ID))
        await settle(pilot)
        Operations(Store(seeded.url), "ana").take_over(LOST_ID, "taken over from another console")
        await pilot.press("r")  # the screen still shows the status of its last read
        await settle(pilot)
        assert isinstance(app.screen, ReplyDialog)


async def test_take_over_reply_with_validated_slots_and_hand_back(seeded: Store) -> None:
    app = create_app(seeded, "ana", poll_interval=0)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        app.push_screen(ConversationScreen(LOST_ID))
        await settle(pilot)
        await pilot.press("r")  # not taken over yet: refused with a hint
        await settle(pilot)
        assert any("take it over first" in n.message for n in app._notifications)
        await pilot.press("t", *"customer is upset", "enter")
        await settle(pilot)
        assert seeded.get_conversation(LOST_ID).status == "taken_over"
        await pilot.press("r")
        await settle(pilot)
        assert isinstance(app.screen, ReplyDialog)
        await pilot.press(*"confirm_b", "enter", "enter")  # search, to the list, pick confirm_block
        await settle(pilot)
        await pilot.press(*"48x1", "ctrl+s")  # last4 must be four digits: refused by the catalog
        await settle(pilot)
        assert isinstance(app.screen, ReplyDialog)
        assert "last4" in screen_text(app, "#reply-error")
        app.screen.query_one("#slot-last4", Input).value = "4821"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert isinstance(app.screen, ConversationScreen)
        assert "Shall I block the card ending 4821" in screen_text(app, "#transcript")
        await pilot.press("h", *"done", "enter")
        await settle(pilot)
        await pilot.press("down", "enter")  # steps are sorted: anything_else, confirm_block, ...
        await settle(pilot)
    actions = seeded.actions(LOST_ID)
    assert [a.action for a in actions] == ["take_over", "operator_reply", "hand_back"]
    assert actions[1].response_id == "confirm_block" and "4821" in (actions[1].sent_text or "")
    assert actions[2].next_step == "confirm_block" and actions[2].reason == "done"
    conversation = seeded.get_conversation(LOST_ID)
    assert (conversation.status, conversation.step) == ("active", "confirm_block")
    assert all(a.operator == "ana" for a in actions) and seeded.verify_chain().intact


async def test_pause_and_resume(seeded: Store, card_policy: Any) -> None:
    app = create_app(seeded, "ana", poll_interval=0)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        app.push_screen(ConversationScreen(LOST_ID))
        await settle(pilot)
        await pilot.press("p", *"checking with fraud", "enter")
        await settle(pilot)
        assert "paused" in screen_text(app, "#conversation-head")
        agent = Agent(card_policy, ScriptedModel(facts=[]), Store(seeded.url))
        assert agent.respond(LOST_ID, "hello?").status == "received"
        app.screen.action_refresh()
        await settle(pilot)
        assert "hello?" in screen_text(app, "#transcript")
        await pilot.press("p", "enter")
        await settle(pilot)
    assert [(a.action, a.reason) for a in seeded.actions(LOST_ID)] == [("pause", "checking with fraud"),
                                                                        ("resume", "")]
    assert seeded.get_conversation(LOST_ID).status == "active"


class StaleFirstRead(ConversationScreen):
    """A conversation screen whose first read is held back until the test lets it finish."""

    def __init__(self, conversation_id: str) -> None:
        super().__init__(conversation_id)
        self.first_read_done = threading.Event()
        self.release_first_read = threading.Event()
        self.reads = 0

    def load(self) -> Any:
        self.reads += 1
        detail = super().load()
        if self.reads == 1:
            self.first_read_done.set()
            self.release_first_read.wait(10)
        return detail


async def test_a_poll_that_read_before_an_action_never_overwrites_the_newer_read(seeded: Store) -> None:
    """CI saw 'active' after a pause: the read started on resume ended after the read that followed it."""
    app = create_app(seeded, "ana", poll_interval=0)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        screen = StaleFirstRead(LOST_ID)
        app.push_screen(screen)
        await asyncio.to_thread(screen.first_read_done.wait, 10)  # the first read saw 'active'
        Operations(seeded, "ana").pause(LOST_ID, "checking with fraud")
        screen.force_show()
        for _ in range(100):
            await pilot.pause(0.02)
            if "paused" in screen_text(app, "#conversation-head"):
                break
        assert "paused" in screen_text(app, "#conversation-head")
        screen.release_first_read.set()  # the stale read now finishes, after the newer one was shown
        await settle(pilot)
        assert screen.reads == 2
        assert "paused" in screen_text(app, "#conversation-head")


async def test_audit_filters_and_chain_status(seeded: Store) -> None:
    app = create_app(seeded, "ana", poll_interval=0)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("u")
        await settle(pilot)
        assert isinstance(app.screen, AuditScreen)
        table = app.screen.query_one("#audit", DataTable)
        assert table.row_count == 9
        assert screen_text(app, "#chain-status") == "chain verified: 9 records intact"
        app.screen.query_one("#filter-status", Input).value = "pending"
        await settle(pilot)
        assert [r[5] for r in cell_texts(table)] == ["fee_refund_supervisor_review", "dispute_opened_large_credit"]
        app.screen.query_one("#filter-response", Input).value = "dispute_opened_large_credit"
        await settle(pilot)
        assert table.row_count == 1
        with sqlite3.connect(seeded.url.removeprefix("sqlite:///")) as db:
            db.execute("UPDATE decision SET response_id = 'fee_refunded' WHERE id = 4")
        await pilot.press("v")
        await settle(pilot)
        assert screen_text(app, "#chain-status").startswith("chain BROKEN at decision 4")


async def test_operator_filter_in_audit(seeded: Store) -> None:
    Operations(seeded, "ana").approve(6, "ok")
    app = create_app(seeded, "ben", poll_interval=0)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        app.push_screen(AuditScreen())
        await settle(pilot)
        app.screen.query_one("#filter-operator", Input).value = "ana"
        await settle(pilot)
        rows = cell_texts(app.screen.query_one("#audit", DataTable))
        assert [(r[5], r[8]) for r in rows] == [("dispute_opened_large_credit", "approve by ana")]


async def test_try_a_policy_with_an_injected_model(store: Store) -> None:
    facts = [{"intent": "lost_or_stolen_card", "handoff": OK}]
    seen: list[tuple[int, int]] = []

    def factory(progress: Any) -> ScriptedModel:
        for done in (1, 2):
            progress(done, 2)
            seen.append((done, 2))
        return ScriptedModel(facts=facts)

    app = create_app(store, "ana", model_factory=factory, policies_dir=ROOT / "policies", poll_interval=0)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("t")
        await settle(pilot)
        assert isinstance(app.screen, TryPolicyScreen)
        options = [str(o.prompt) for o in app.screen.query_one("#policies").options]
        assert options == ["card_services.py", "retail_orders.py"]
        await pilot.press("enter")
        await settle(pilot)
        assert seen == [(1, 2), (2, 2)]
        await pilot.press(*"I lost my card", "enter")
        await settle(pilot)
        assert "Before I can look at your account" in screen_text(app, "#try-chat")
        detail = screen_text(app, "#try-decision")
        assert "ask_identity" in detail and "100%" in detail and "by policy" in detail
    (conversation,) = [c for c in [store.get_conversation(d.conversation_id) for d in store.decisions()]]
    assert conversation.customer_ref == "try:ana" and conversation.policy_name == "card_services"


async def test_help_lists_the_bindings(seeded: Store) -> None:
    app = create_app(seeded, "ana", poll_interval=0)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await settle(pilot)
        assert isinstance(app.screen, HelpScreen)
        keys = screen_text(app, "#help-keys")
        for word in ("Approvals", "Audit", "Try policy", "Filter", "Search", "Quit"):
            assert word in keys
        await pilot.press("escape")
        assert isinstance(app.screen, ConversationsScreen)


async def test_conversation_deleted_meanwhile_is_reported(seeded: Store) -> None:
    app = create_app(seeded, "ana", poll_interval=0)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        with sqlite3.connect(seeded.url.removeprefix("sqlite:///")) as db:
            db.execute("PRAGMA foreign_keys=OFF")
            db.execute("DELETE FROM decision WHERE conversation_id = ?", (LOST_ID,))
            db.execute("DELETE FROM conversation WHERE id = ?", (LOST_ID,))
        app.push_screen(ConversationScreen(LOST_ID))
        await settle(pilot)
        assert isinstance(app.screen, ConversationsScreen)
        assert any("no longer exists" in n.message for n in app._notifications)


def test_supervise_on_a_missing_database_says_how_to_fix(tmp_path: Path, capsys: Any) -> None:
    from sopagent.cli import main

    missing = tmp_path / "nowhere.db"
    assert main(["supervise", "--db", f"sqlite:///{missing}", "--operator", "ana"]) == 3
    err = capsys.readouterr().err
    assert f"no audit store at {missing}" in err and "fix:" in err and "Traceback" not in err
    assert not missing.exists()  # not silently created empty


async def test_locked_database_shows_a_notification_and_recovers(seeded: Store) -> None:
    """Another process holds the SQLite file exclusively: a clear notification, no traceback; then it clears."""
    store = Store(seeded.url, timeout_s=0.2)  # fail fast instead of waiting 5 s for the lock
    app = create_app(store, "ana", poll_interval=0)
    for engine in (seeded.engine, store.engine):
        engine.dispose()  # no pooled connection keeps the file open: the lock below is truly exclusive
    locker = sqlite3.connect(seeded.url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        locker.execute("PRAGMA locking_mode=EXCLUSIVE")
        locker.execute("BEGIN EXCLUSIVE")
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            assert isinstance(app.screen, ConversationsScreen)
            table = app.screen.query_one("#conversations", DataTable)
            assert table.row_count == 0
            errors = [n.message for n in app._notifications if n.severity == "error"]
            assert len(errors) == 1, errors
            assert "cannot read the conversation list: database is locked" in errors[0]
            assert "fix: another process holds a write lock" in errors[0] and "Traceback" not in errors[0]
            locker.execute("COMMIT")
            locker.close()
            await pilot.press("ctrl+r")
            await settle(pilot)
            assert table.row_count == 4
    finally:
        locker.close()


async def test_transcript_renders_the_newest_items_that_fit_and_m_shows_all(seeded: Store) -> None:
    app = create_app(seeded, "ana", poll_interval=0)
    async with app.run_test(size=(80, 16)) as pilot:
        await settle(pilot)
        app.push_screen(ConversationScreen(FEE_ID))
        await settle(pilot)
        text = screen_text(app, "#transcript")
        assert "earlier items; m shows all" in text and "please refund a fee" not in text
        assert "the annual fee, it was your mistake" in text  # the newest turn is always there
        await pilot.press("m")
        await settle(pilot)
        text = screen_text(app, "#transcript")
        assert "earlier items" not in text and "please refund a fee" in text
