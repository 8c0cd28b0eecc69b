"""The console's shared widgets on a real Textual app (Pilot): in-place table updates and the footer."""

from __future__ import annotations

from typing import Any

import pytest
from console_support import FEE_ID, seed
from rich.cells import cell_len
from textual.app import App, ComposeResult
from textual.widgets import DataTable, Static
from textual.worker import WorkerCancelled

from sopagent import Store
from sopagent.console import create_app
from sopagent.console.screens.conversation import ConversationScreen
from sopagent.console.widgets import KeyFooter, sync_rows

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    """Textual runs on asyncio."""
    return "asyncio"


class TableApp(App[None]):
    """One DataTable with three columns."""

    def compose(self) -> ComposeResult:
        yield DataTable()

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns("name", "state", "n")


def shown(table: DataTable[Any]) -> list[tuple[str, list[str]]]:
    """(row key, plain cell texts) in display order."""
    return [(str(row.key.value), [str(c) for c in table.get_row(row.key)]) for row in table.ordered_rows]


async def test_sync_rows_reorders_adds_removes_and_updates_in_place() -> None:
    app = TableApp()
    async with app.run_test() as pilot:
        table = app.query_one(DataTable)
        sync_rows(table, [("a", ("alpha", "open", "1")), ("b", ("beta", "open", "2")), ("c", ("[bold]c", "x", "3"))])
        await pilot.pause()
        kept = table.rows["a"]
        sync_rows(table, [("c", ("[bold]c", "x", "3")), ("d", ("delta", "new", "4")), ("a", ("alpha", "closed", "1"))])
        await pilot.pause()
        assert shown(table) == [("c", ["[bold]c", "x", "3"]), ("d", ["delta", "new", "4"]),
                                ("a", ["alpha", "closed", "1"])]
        assert table.rows["a"] is kept  # updated in place, not removed and added again
        sync_rows(table, [])
        assert table.row_count == 0


async def test_sync_rows_falls_back_when_rows_look_alike() -> None:
    app = TableApp()
    async with app.run_test() as pilot:
        table = app.query_one(DataTable)
        sync_rows(table, [("a", ("same", "s", "1")), ("b", ("same", "s", "1"))])
        sync_rows(table, [("b", ("same", "s", "1")), ("a", ("same", "s", "1"))])
        await pilot.pause()
        assert [key for key, _ in shown(table)] == ["b", "a"]


async def settle(pilot: Any) -> None:
    """Let workers finish and their results render."""
    for _ in range(3):
        try:
            await pilot.app.workers.wait_for_complete()
        except WorkerCancelled:
            pass
        await pilot.pause()


async def test_footer_shows_the_main_keys_at_80_columns_and_is_not_rebuilt_needlessly(
        store: Store, card_policy: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    seed(store, card_policy, monkeypatch)
    app = create_app(store, "ana", poll_interval=0)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        app.push_screen(ConversationScreen(FEE_ID))
        await settle(pilot)
        footer = app.screen.query_one(KeyFooter)
        shown = str(footer.render())
        keys = {key for key, _, _, _ in footer.keys}
        assert keys >= {"a", "o", "e", "t", "r", "h", "p", "?"}, footer.keys
        assert cell_len(shown.rstrip()) <= 80, shown  # every key fits at 80 columns
        for key, description, _, _ in footer.keys:
            assert f" {key} {description}" in shown
        rebuilds = footer.rebuilds
        app.screen.refresh_bindings()
        await settle(pilot)
        assert footer.rebuilds == rebuilds  # the same keys: nothing to re-render
        await pilot.press("question_mark")
        await settle(pilot)
        help_text = str(app.screen.query_one("#help-keys", Static).render())
        for hidden in ("Back", "All turns", "Refresh", "Pause or resume the agent"):  # not in the footer
            assert hidden in help_text


async def test_clicking_a_key_in_the_footer_runs_it(store: Store, card_policy: Any,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from sopagent.console.screens.approvals import ApprovalsScreen

    seed(store, card_policy, monkeypatch)
    app = create_app(store, "ana", poll_interval=0)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        footer = app.screen.query_one(KeyFooter)
        shown = str(footer.render())
        await pilot.click(KeyFooter, offset=(shown.index("Approvals"), 0))
        await settle(pilot)
        assert isinstance(app.screen, ApprovalsScreen)
