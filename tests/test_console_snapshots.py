"""SVG snapshots of the console's main screens on fixed data (update with --snapshot-update)."""

from __future__ import annotations

from typing import Any

import pytest
from console_support import FEE_ID, seed

from sopagent import Store
from sopagent.console import create_app
from sopagent.console.screens.audit import AuditScreen
from sopagent.console.screens.conversation import ConversationScreen


@pytest.fixture
def app(store: Store, card_policy: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The console on the four fixed conversations, polling off (a refresh is explicit)."""
    seed(store, card_policy, monkeypatch)
    application = create_app(store, "ana", poll_interval=0)
    application.sub_title = "operator ana  |  sqlite:///audit.db"  # the temporary path differs per run
    return application


async def _settle(pilot: Any) -> None:
    from textual.worker import WorkerCancelled

    for _ in range(3):
        try:
            await pilot.app.workers.wait_for_complete()
        except WorkerCancelled:
            pass
        await pilot.pause()


def test_conversation_list_80x24(app: Any, snap_compare: Any) -> None:
    assert snap_compare(app, terminal_size=(80, 24), run_before=_settle)


def test_conversation_80x24(app: Any, snap_compare: Any) -> None:
    async def open_it(pilot: Any) -> None:
        await _settle(pilot)
        pilot.app.push_screen(ConversationScreen(FEE_ID))
        await _settle(pilot)

    assert snap_compare(app, terminal_size=(80, 24), run_before=open_it)


def test_conversation_wide_140x44(app: Any, snap_compare: Any) -> None:
    async def open_it(pilot: Any) -> None:
        await _settle(pilot)
        pilot.app.push_screen(ConversationScreen(FEE_ID))
        await _settle(pilot)

    assert snap_compare(app, terminal_size=(140, 44), run_before=open_it)


def test_approval_queue_100x30(app: Any, snap_compare: Any) -> None:
    async def open_it(pilot: Any) -> None:
        await _settle(pilot)
        await pilot.press("a")
        await _settle(pilot)

    assert snap_compare(app, terminal_size=(100, 30), run_before=open_it)


def test_audit_100x30(app: Any, snap_compare: Any) -> None:
    async def open_it(pilot: Any) -> None:
        await _settle(pilot)
        pilot.app.push_screen(AuditScreen())
        await _settle(pilot)

    assert snap_compare(app, terminal_size=(100, 30), run_before=open_it)


def test_help_80x24(app: Any, snap_compare: Any) -> None:
    async def open_it(pilot: Any) -> None:
        await _settle(pilot)
        await pilot.press("question_mark")
        await _settle(pilot)

    assert snap_compare(app, terminal_size=(80, 24), run_before=open_it)
