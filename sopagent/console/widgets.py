"""Small widgets shared by the console's screens."""

from __future__ import annotations

from typing import Any, Sequence

from rich.text import Text
from textual.content import Content
from textual.markup import escape
from textual.screen import Screen
from textual.widgets import DataTable, Static


class TitleBar(Static):
    """The app's title and subtitle (operator, database) on one line at the top, as one widget.

    Textual's ``Header`` (an icon, a title widget and reactive bindings) took about 15 ms of CPU per
    screen it appears on, a tenth of the console's time to open (``benchmarks/console_latency.py``);
    this shows the same line. ``ctrl+p`` opens the command palette, as the header's icon did.
    """

    DEFAULT_CSS = """
    TitleBar {
        dock: top;
        height: 1;
        background: $panel;
        color: $foreground;
        text-align: center;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    """

    def __init__(self) -> None:
        super().__init__("")

    def on_mount(self) -> None:
        """Show the app's title and subtitle."""
        title = self.app.title
        if self.app.sub_title:
            title = f"{title} \N{EM DASH} {self.app.sub_title}"
        self.update(Text(title))


class KeyFooter(Static):
    """The keys of the current screen on one line at the bottom, as one widget; click a key to use it.

    Textual's ``Footer`` mounts one widget per key and rebuilds them all on every bindings signal (a
    focus change, a screen resume), several times per screen change; on the console's first screen
    that was about 40 ms of CPU of the 115 ms the screen took to open with an empty list
    (``benchmarks/console_latency.py``). This footer renders the same keys as one line of text, and
    only when the keys it shows change. ``?`` lists every key of the screen, the hidden ones included.
    """

    DEFAULT_CSS = """
    KeyFooter {
        dock: bottom;
        height: 1;
        background: $footer-background;
        color: $footer-description-foreground;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    """

    def __init__(self) -> None:
        super().__init__("")
        self.keys: list[tuple[str, str, bool, str]] = []
        """What is shown: (key, description, enabled, click action) per key."""
        self.rebuilds = 0

    def on_mount(self) -> None:
        """Follow the screen's bindings."""
        self.screen.bindings_updated_signal.subscribe(self, self.bindings_changed)
        self.bindings_changed(self.screen)

    def on_unmount(self) -> None:
        """Stop following them."""
        self.screen.bindings_updated_signal.unsubscribe(self)

    def bindings_changed(self, screen: Screen[Any]) -> None:
        """Re-render when the keys differ from those on display."""
        if not self.is_attached or screen is not self.screen:
            return
        keys: dict[str, tuple[str, str, bool, str]] = {}
        for node, binding, enabled, tooltip in screen.active_bindings.values():
            if not binding.show or binding.action in keys:
                continue
            action = binding.action
            if "." not in action:
                action = f"app.{action}" if node is self.app else f"screen.{action}" if node is screen else ""
            keys[binding.action] = (self.app.get_key_display(binding), binding.description, enabled, action)
        if list(keys.values()) == self.keys:
            return
        self.keys = list(keys.values())
        self.rebuilds += 1
        self.show_keys()

    def on_resize(self) -> None:
        """Re-fit the keys to the new width."""
        self.show_keys()

    def show_keys(self) -> None:
        """Render the keys, two spaces apart, or one where two would not fit the width."""
        width = self.size.width or self.app.size.width
        spacing = 2 if sum(len(k) + len(d) + 3 for k, d, _, _ in self.keys) + 1 <= width else 1
        parts = []
        for key, description, enabled, action in self.keys:
            text = f"[b $footer-key-foreground]{escape(key)}[/] {escape(description)}"
            if not enabled:
                text = f"[dim]{text}[/]"
            elif action:
                text = f"[@click={action}]{text}[/]"
            parts.append(text)
        self.update(Content.from_markup(" " + (" " * spacing).join(parts)))


class ListTable(DataTable[Any]):
    """A row-cursor table for the console's lists that repaints itself when its columns widen.

    The table measures new rows' cells only when idle, after they were added; in a real terminal the
    cursor row was sometimes painted before that, with the columns as wide as their headings
    ("cust-000  card_s  fee_"), and stayed so until the cursor moved (seen in tmux in about one
    start in three, on this project's main branch as well). Repainting when the measured (virtual)
    size changes fixes it; that happens when rows arrive or a wider cell appears, not on every poll.
    """

    def __init__(self, *, id: str) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)

    def watch_virtual_size(self) -> None:
        """Repaint every visible line with the new column widths."""
        self.refresh()


def _row_signature(cells: Sequence[Any]) -> tuple[str, ...]:
    return tuple(str(cell) for cell in cells)


def sync_rows(table: DataTable[Any], rows: Sequence[tuple[str, Sequence[Any]]]) -> None:
    """Make ``table`` show ``rows`` (key, cells) in this order, touching only what differs.

    A refresh that finds the same data changes nothing (no re-measure, no re-render, the scroll
    position stays); changed cells are updated in place, rows that left are removed, new rows are
    added, and the order is restored with one sort. Clearing and re-adding every row instead costs
    a measure and a render of every cell on each poll. Plain strings are shown as they are, never
    read as Rich markup (a customer reference with brackets stays literal, and is not parsed).
    """
    columns = [column.key for column in table.ordered_columns]
    rows = [(key, [Text(cell) if isinstance(cell, str) else cell for cell in cells]) for key, cells in rows]
    wanted = {key: cells for key, cells in rows}
    for row in list(table.ordered_rows):
        if row.key.value not in wanted:
            table.remove_row(row.key)
    for key, cells in rows:
        if key not in table.rows:
            table.add_row(*cells, key=key)
            continue
        for column, value in zip(columns, cells):
            if table.get_cell(key, column) != value:
                table.update_cell(key, column, value, update_width=True)
    order = [key for key, _ in rows]
    if [row.key.value for row in table.ordered_rows] == order:
        return
    position = {_row_signature(cells): index for index, (_, cells) in enumerate(rows)}
    if len(position) == len(rows):  # every row tells itself apart by what it shows: sort in place
        table.sort(key=lambda shown: position[_row_signature(shown)])
    else:
        table.clear()
        for key, cells in rows:
            table.add_row(*cells, key=key)
