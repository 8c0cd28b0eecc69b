"""The approval queue: decisions waiting for a human, oldest first, with the selected one in detail."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Static

from sopagent.console.queries import Entry, PendingRow, approval_queue
from sopagent.console.render import decision_text
from sopagent.console.screens.actions import DECISION_BINDINGS, DecisionActions
from sopagent.console.screens.base import PollingScreen
from sopagent.console.widgets import KeyFooter, ListTable, TitleBar, sync_rows


class ApprovalsScreen(PollingScreen, DecisionActions):
    """Decisions held for approval (requires_approval, or confidence below the threshold)."""

    BINDINGS = [
        Binding("escape", "back", "Back"),
        *DECISION_BINDINGS,
        Binding("enter", "open", "Open", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[PendingRow] = []

    def compose(self) -> ComposeResult:
        yield TitleBar()
        yield Static("", id="queue-info")
        yield ListTable(id="queue")
        with VerticalScroll(id="queue-detail-scroll"):
            yield Static("", id="queue-detail")
        yield KeyFooter()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for label in ("decision", "customer", "policy", "step", "held reply", "conf", "since"):
            table.add_column(label, key=label)
        table.focus()

    def load(self) -> list[PendingRow]:
        return approval_queue(self.console.store)

    def show(self, rows: list[PendingRow]) -> None:
        self.rows = rows
        table = self.query_one(DataTable)
        selected = self.selected_decision()
        shown: list[tuple[str, tuple[str, ...]]] = []
        for row in rows:
            d = row.decision
            conf = "" if d.confidence is None else f"{d.confidence:.0%}"
            shown.append((str(d.id), (str(d.id), row.customer_ref or row.conversation_id[:8], row.policy_name,
                                      d.step, d.response_id or "", conf, d.created_at[:19].replace("T", " "))))
        sync_rows(table, shown)
        if selected is not None and str(selected.id) in table.rows:
            table.move_cursor(row=table.get_row_index(str(selected.id)))
        self.query_one("#queue-info", Static).update(
            f"{len(rows)} waiting for approval" if rows else "nothing waiting for approval")
        self._show_detail()

    def _show_detail(self) -> None:
        decision = self.selected_decision()
        widget = self.query_one("#queue-detail", Static)
        if decision is None:
            widget.update("")
            return
        text = decision_text(decision, wide=self.size.width >= 110)
        if decision.customer_text:
            text.append("  customer: ", style="cyan")
            text.append(decision.customer_text)
        widget.update(text)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_detail()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open()

    def selected_decision(self) -> Entry | None:
        table = self.query_one(DataTable)
        if table.row_count == 0 or not self.rows:
            return None
        key = str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)
        for row in self.rows:
            if str(row.decision.id) == key:
                return row.decision
        return None

    def after_action(self) -> None:
        self.force_show()

    def action_open(self) -> None:
        """Open the selected decision's conversation."""
        from sopagent.console.screens.conversation import ConversationScreen

        decision = self.selected_decision()
        for row in self.rows:
            if decision is not None and row.decision.id == decision.id:
                self.app.push_screen(ConversationScreen(row.conversation_id))

    def action_back(self) -> None:
        """Back to the list."""
        self.app.pop_screen()
