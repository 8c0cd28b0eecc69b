"""Approve, override and escalate, shared by the conversation screen and the approval queue."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, cast

from textual.binding import Binding
from textual.screen import Screen

from sopagent.console.queries import Entry
from sopagent.console.screens.dialogs import OverrideDialog, ReasonDialog

if TYPE_CHECKING:
    from sopagent.console.app import ConsoleApp
    from sopagent.operations import Operations

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
        self._settle_with_reason("Approve decision {id}: {response}", "approved decision {id}",
                                 lambda ops, decision, reason: ops.approve(decision.id, reason))

    def _settle_with_reason(self, title: str, done_text: str,
                            call: Callable[[Operations, Entry, str], object]) -> None:
        """Ask for a reason, then settle the selected pending decision with ``call``."""
        decision = self._target()
        if decision is None:
            return
        app = cast("ConsoleApp", self.app)
        names = {"id": decision.id, "response": decision.response_id}

        def done(reason: str | None) -> None:
            if reason is not None:
                app.perform(done_text.format(**names), lambda ops: call(ops, decision, reason), self.after_action)

        app.push_screen(ReasonDialog(title.format(**names)), done)

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
        self._settle_with_reason("Escalate decision {id}", "escalated decision {id}",
                                 lambda ops, decision, reason: ops.escalate(decision.id, reason))
