"""Approve, override and escalate, shared by the conversation screen and the approval queue."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from textual.binding import Binding
from textual.screen import Screen

from sopagent.console.queries import Entry
from sopagent.console.screens.dialogs import OverrideDialog, ReasonDialog

if TYPE_CHECKING:
    from sopagent.console.app import ConsoleApp

DECISION_BINDINGS = [
    Binding("a", "approve", "Approve"),
    Binding("o", "override", "Override"),
    Binding("e", "escalate", "Escalate"),
]


class DecisionActions(Screen[None]):
    """Mixin-style base: subclasses say which decision is selected and how to refresh."""

    def selected_decision(self) -> Entry | None:
        """The pending decision the keys act on, if any."""
        raise NotImplementedError

    def after_action(self) -> None:
        """Reload after an action (or a refusal: another console may have handled it)."""
        raise NotImplementedError

    def _target(self) -> Entry | None:
        decision = self.selected_decision()
        if decision is None:
            self.app.notify("nothing is waiting for approval here", severity="warning")
        return decision

    def action_approve(self) -> None:
        """Send the held reply."""
        decision = self._target()
        if decision is None:
            return
        app = cast("ConsoleApp", self.app)

        def done(reason: str | None) -> None:
            if reason is not None:
                app.perform(f"approved decision {decision.id}", lambda ops: ops.approve(decision.id, reason),
                            self.after_action)

        app.push_screen(ReasonDialog(f"Approve decision {decision.id}: {decision.response_id}"), done)

    def action_override(self) -> None:
        """Send another option from the allowed set."""
        decision = self._target()
        if decision is None:
            return
        app = cast("ConsoleApp", self.app)

        def done(picked: tuple[int, str] | None) -> None:
            if picked is not None:
                index, reason = picked
                app.perform(f"overrode decision {decision.id} with option {index}",
                            lambda ops: ops.override(decision.id, index, reason), self.after_action)

        app.push_screen(OverrideDialog(decision.options, decision.chosen_index), done)

    def action_escalate(self) -> None:
        """Do not send; hand the conversation to a specialist."""
        decision = self._target()
        if decision is None:
            return
        app = cast("ConsoleApp", self.app)

        def done(reason: str | None) -> None:
            if reason is not None:
                app.perform(f"escalated decision {decision.id}", lambda ops: ops.escalate(decision.id, reason),
                            self.after_action)

        app.push_screen(ReasonDialog(f"Escalate decision {decision.id}"), done)
