"""The live conversation list: customer, policy, step, status, pending count, last activity."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Input, Static

from sopagent.console.queries import LIST_PAGE, ConversationPage, conversation_page
from sopagent.console.render import status_text
from sopagent.console.screens.base import PollingScreen
from sopagent.console.widgets import KeyFooter, ListTable, TitleBar, sync_rows

STATUS_FILTERS = ("", "pending", "active", "awaiting_approval", "paused", "taken_over", "escalated", "closed")
"""What ``f`` cycles through ("" shows every status; pending: something waits for approval)."""

SEARCH_PLACEHOLDER = "search id, customer, policy, step"
SEARCH_HINT = f"[b]/[/] {SEARCH_PLACEHOLDER}"
"""Shown where the search box opens when ``/`` is pressed."""


class ConversationsScreen(PollingScreen):
    """Every conversation by latest activity, updating by itself as agents write."""

    BINDINGS = [
        Binding("slash", "search", "Search", key_display="/"),
        Binding("f", "cycle_filter", "Filter"),
        Binding("a", "approvals", "Approvals"),
        Binding("u", "audit", "Audit"),
        Binding("t", "try_policy", "Try policy"),
        Binding("escape", "clear_search", "Clear search", show=False),
        Binding("q", "app.quit", "Quit"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.search = ""
        self.status_filter = ""
        self.info = ""
        self.limit = LIST_PAGE
        self.more = False

    def compose(self) -> ComposeResult:
        yield TitleBar()
        with Horizontal(id="list-bar"):
            yield Static(SEARCH_HINT, id="search-hint")
            yield Static("", id="list-info")
        yield ListTable(id="conversations")
        yield KeyFooter()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for label, key in (("customer", "customer"), ("policy", "policy"), ("step", "step"),
                           ("status", "status"), ("pend", "pending"), ("last activity", "updated"),
                           ("conversation", "id")):
            table.add_column(label, key=key)
        table.focus()


    def load(self) -> ConversationPage:
        return conversation_page(self.console.store, self.search, self.status_filter, limit=self.limit)

    def show(self, page: ConversationPage) -> None:
        table = self.query_one(DataTable)
        selected = self.selected_id()
        sync_rows(table, [(row.id, (row.customer_ref or "-", row.policy_name, row.step, status_text(row.status),
                                    str(row.pending) if row.pending else "",
                                    row.updated_at[:19].replace("T", " "), row.id[:8])) for row in page.rows])
        if selected is not None and selected in table.rows and table.get_row_index(selected) != table.cursor_row:
            table.move_cursor(row=table.get_row_index(selected))
        self.more = page.total > len(page.rows)
        shown = f"{len(page.rows)} of {page.total}" if self.more else str(page.total)
        what = f", {self.status_filter}" if self.status_filter else ""
        info = f"{shown} conversation{'' if page.total == 1 else 's'}{what}"
        if info != self.info:
            self.info = info
            self.query_one("#list-info", Static).update(Text(info))

    def selected_id(self) -> str | None:
        """The conversation id under the cursor, if any."""
        table = self.query_one(DataTable)
        if table.row_count == 0:
            return None
        return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        """At the last row shown, read the next page of conversations."""
        if self.more and event.cursor_row == event.data_table.row_count - 1:
            self.more = False
            self.limit += LIST_PAGE
            self.action_refresh()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "search":
            self.search = event.value
            self.action_refresh()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.query_one(DataTable).focus()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        from sopagent.console.screens.conversation import ConversationScreen

        self.app.push_screen(ConversationScreen(str(event.row_key.value)))

    def action_search(self) -> None:
        """Show the search box (mounted on first use, which keeps opening the console light) and focus it."""
        found = self.query("#search")
        if found:
            found.first(Input).focus()
            return
        search = Input(placeholder=SEARCH_PLACEHOLDER, id="search")
        self.query_one("#search-hint").remove()
        self.query_one("#list-bar").mount(search, before=0)
        search.focus()

    def action_clear_search(self) -> None:
        """Empty the search box."""
        for search in self.query("#search").results(Input):
            search.value = ""
        self.query_one(DataTable).focus()

    def action_cycle_filter(self) -> None:
        """Show the next status only (pending, active, ... all)."""
        position = STATUS_FILTERS.index(self.status_filter)
        self.status_filter = STATUS_FILTERS[(position + 1) % len(STATUS_FILTERS)]
        self.action_refresh()

    def action_approvals(self) -> None:
        """Open the approval queue."""
        from sopagent.console.screens.approvals import ApprovalsScreen

        self.app.push_screen(ApprovalsScreen())

    def action_audit(self) -> None:
        """Open the audit view."""
        from sopagent.console.screens.audit import AuditScreen

        self.app.push_screen(AuditScreen())

    def action_try_policy(self) -> None:
        """Start a test conversation against a policy."""
        from sopagent.console.screens.try_policy import TryPolicyScreen

        self.app.push_screen(TryPolicyScreen())
