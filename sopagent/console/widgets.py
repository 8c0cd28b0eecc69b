"""Small widgets shared by the console's screens."""

from __future__ import annotations

from typing import Any, Sequence

from rich.text import Text
from textual.screen import Screen
from textual.widgets import DataTable, Footer


class KeyFooter(Footer):
    """Textual's footer, compact, without the palette key, rebuilt only when the shown keys change.

    Textual's ``Footer`` rebuilds all its key widgets on every bindings signal (a focus change, a
    screen resume, a refresh of the bindings), several times per screen change, even when the keys it
    shows are the same. Each rebuild mounts and styles one widget per key; on a screen push that was
    the largest part of the console's own time. This footer compares what it would show and skips
    the rebuild when nothing changed. ``ctrl+p`` still opens the command palette; ``?`` lists every key.
    """

    def __init__(self) -> None:
        super().__init__(compact=True, show_command_palette=False)
        self._shown: tuple[Any, ...] | None = None

    def bindings_changed(self, screen: Screen[Any]) -> None:
        """Rebuild the keys only when the shown bindings differ from those on display."""
        if screen.app.app_focus and self.is_attached and screen is self.screen:
            shown = tuple((b.key, b.description, enabled, tooltip)
                          for _, b, enabled, tooltip in screen.active_bindings.values() if b.show)
            if shown == self._shown:
                return
            self._shown = shown
        super().bindings_changed(screen)


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
