"""The audit view: decisions filtered by conversation, policy, response, status, operator and time."""

from __future__ import annotations

from dataclasses import dataclass

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid
from textual.widgets import DataTable, Input, Static

from sopagent.console.queries import AuditFilter, AuditRow, audit_rows
from sopagent.console.render import status_text
from sopagent.console.screens.base import PollingScreen
from sopagent.console.widgets import KeyFooter, ListTable, TitleBar, sync_rows
from sopagent.store import ChainReport

FILTER_FIELDS = ("conversation", "policy", "response", "status", "operator", "since", "until")


@dataclass(frozen=True)
class AuditData:
    """What the audit view shows: matching decisions and the chain's state."""

    rows: list[AuditRow]
    chain: ChainReport | None


class AuditScreen(PollingScreen):
    """Every decision, filtered, with the hash chain's status (verified, or where it breaks)."""

    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("v", "verify", "Verify chain"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.filters = AuditFilter()
        self.rows: list[AuditRow] = []
        self.verify_next = True

    def compose(self) -> ComposeResult:
        yield TitleBar()
        with Grid(id="audit-filters"):
            for name in FILTER_FIELDS:
                hint = "YYYY-MM-DD[THH:MM]" if name in ("since", "until") else ""
                yield Input(placeholder=f"{name} {hint}".strip(), id=f"filter-{name}")
        yield Static("chain: verifying ...", id="chain-status")
        yield ListTable(id="audit")
        yield KeyFooter()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for label in ("seq", "time", "conversation", "policy", "step", "response", "status", "chosen by",
                      "handled"):
            table.add_column(label, key=label)
        table.focus()

    def load(self) -> AuditData:
        chain = None
        if self.verify_next:
            self.verify_next = False
            chain = self.console.store.verify_chain()
        elif isinstance(self._last, AuditData):
            chain = self._last.chain
        return AuditData(audit_rows(self.console.store, self.filters), chain)

    def show(self, data: AuditData) -> None:
        self.rows = data.rows
        status = self.query_one("#chain-status", Static)
        if data.chain is not None:
            status.update(data.chain.describe())
            status.set_class(not data.chain.intact, "broken")
        table = self.query_one(DataTable)
        sync_rows(table, [(str(row.id), (str(row.seq), row.created_at[:19].replace("T", " "), row.conversation_id[:8],
                                          row.policy_name, row.step, row.response_id, status_text(row.status),
                                          row.chosen_by, row.handled_by)) for row in data.rows])

    def on_input_changed(self, event: Input.Changed) -> None:
        name = (event.input.id or "").removeprefix("filter-")
        if name in FILTER_FIELDS:
            values = {field: self.query_one(f"#filter-{field}", Input).value.strip() for field in FILTER_FIELDS}
            self.filters = AuditFilter(**values)
            self.action_refresh()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.query_one(DataTable).focus()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        from sopagent.console.screens.conversation import ConversationScreen

        for row in self.rows:
            if str(row.id) == event.row_key.value:
                self.app.push_screen(ConversationScreen(row.conversation_id))
                return

    def action_verify(self) -> None:
        """Recompute the whole hash chain now."""
        self.query_one("#chain-status", Static).update("chain: verifying ...")
        self.verify_next = True
        self.force_show()

    def action_back(self) -> None:
        """Back to the list."""
        self.app.pop_screen()


