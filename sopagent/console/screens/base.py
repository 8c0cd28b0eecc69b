"""A screen that polls the audit store in a worker thread and renders only what changed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from textual.binding import Binding
from textual.screen import Screen
from textual.worker import Worker, get_current_worker

from sopagent.errors import ConversationError, SopAgentError

if TYPE_CHECKING:
    from sopagent.console.app import ConsoleApp


class PollingScreen(Screen[None]):
    """Subclasses implement :meth:`load` (runs in a thread) and :meth:`show` (runs on the UI loop).

    Textual calls ``on_mount`` of every class in the hierarchy, so a subclass's own ``on_mount`` must
    not call ``super().on_mount()`` (that loaded twice and started two poll timers).
    """

    BINDINGS = [Binding("ctrl+r", "refresh", "Refresh", show=False)]

    def __init__(self) -> None:
        super().__init__()
        self._last: Any = object()
        self._last_error = ""
        self._mounted_load = False

    @property
    def console(self) -> "ConsoleApp":
        """The console app (typed)."""
        return cast("ConsoleApp", self.app)

    def on_mount(self) -> None:
        """Load once now, then every poll interval."""
        self._mounted_load = True
        self.action_refresh()
        if self.console.poll_interval > 0:
            self.set_interval(self.console.poll_interval, self._tick)

    def _tick(self) -> None:
        if self.app.screen is self:  # screens underneath (or under a dialog) wait until shown again
            self.action_refresh()

    def on_screen_resume(self) -> None:
        """Shown again (a screen or dialog above was closed): reload now.

        Textual also resumes a screen when it is first shown, right after mounting it; the load
        that :meth:`on_mount` started covers that one (reading twice doubled the start-up work).
        """
        if self._mounted_load:
            self._mounted_load = False
            return
        self.action_refresh()

    def action_refresh(self) -> None:
        """Reload from the database in a worker thread."""
        self.run_worker(self._poll, thread=True, exclusive=True, group=f"poll-{id(self)}")

    def _poll(self) -> None:
        worker = get_current_worker()
        try:
            data = self.load()
        except ConversationError as exc:
            self.app.call_from_thread(self.gone, exc)
            return
        except SopAgentError as exc:
            if str(exc) != self._last_error:  # say it once, not every second
                self._last_error = str(exc)
                self.console.report(exc)
            return
        self._last_error = ""
        if data != self._last:  # the screen already shows ``_last``: nothing to do when equal
            self.app.call_from_thread(self._show_if_latest, worker, data)

    def _show_if_latest(self, worker: Worker[None], data: Any) -> None:
        """Render a poll's data unless a newer poll has started since (UI loop).

        Polls run in threads and may finish out of order: a read that began before an operator's
        action committed can end after the read that followed the action. Refreshing cancels the
        older poll (``exclusive``) on this loop, so checking here keeps the stale read off screen.
        """
        if worker.is_cancelled or data == self._last:
            return
        self._last = data
        self.show(data)

    def force_show(self) -> None:
        """Forget the last data so the next poll re-renders (after a resize, say)."""
        self._last = object()
        self.action_refresh()

    def load(self) -> Any:
        """Read what the screen shows (worker thread)."""
        raise NotImplementedError

    def show(self, data: Any) -> None:
        """Render ``data`` (UI loop)."""
        raise NotImplementedError

    def gone(self, exc: ConversationError) -> None:
        """What the screen shows is gone from the database: say so and leave."""
        self.console.report(exc)
        if self.app.screen is self:
            self.app.pop_screen()
