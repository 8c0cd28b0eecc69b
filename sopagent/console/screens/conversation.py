"""One conversation: the transcript, and under each agent turn its decision; operator actions."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Static

from sopagent.console.queries import ConversationDetail, Entry, conversation_detail
from sopagent.console.render import entry_text, status_text, wrapped_lines
from sopagent.console.screens.actions import DECISION_BINDINGS, DecisionActions
from sopagent.console.screens.base import PollingScreen
from sopagent.console.screens.dialogs import ReasonDialog, ReplyDialog, StepDialog
from sopagent.console.widgets import KeyFooter, TitleBar
from sopagent.errors import SopAgentError

WIDE = 110
"""From this many columns on, decisions show slot values and latency per stage."""
MIN_ITEMS = 2
"""Transcript items rendered at least, however small the terminal."""


class ConversationScreen(PollingScreen, DecisionActions):
    """A conversation's transcript with every decision; approve, take over, reply, hand back, pause."""

    BINDINGS = [
        *DECISION_BINDINGS,
        Binding("t", "take_over", "Take over"),
        Binding("r", "reply", "Reply"),
        Binding("h", "hand_back", "Hand back"),
        Binding("p", "pause", "Pause", tooltip="Pause or resume the agent"),
        Binding("escape", "back", "Back", show=False),
        Binding("m", "more", "All turns", show=False),
    ]

    def __init__(self, conversation_id: str) -> None:
        super().__init__()
        self.conversation_id = conversation_id
        self.detail: ConversationDetail | None = None
        self.show_all = False

    def compose(self) -> ComposeResult:
        yield TitleBar()
        yield Static("loading ...", id="conversation-head")
        with VerticalScroll(id="transcript-scroll"):
            yield Static("", id="transcript")
        yield KeyFooter()

    def on_mount(self) -> None:
        self.query_one("#transcript-scroll", VerticalScroll).anchor()  # follow new turns at the bottom

    def load(self) -> ConversationDetail:
        return conversation_detail(self.console.store, self.conversation_id)

    def show(self, detail: ConversationDetail) -> None:
        self.detail = detail
        head = Text()
        head.append(f"{detail.customer_ref or '(no customer ref)'}  ", style="bold")
        head.append(f"{detail.policy_name} {detail.policy_version}  step {detail.step}  ")
        head.append_text(status_text(detail.status))
        open_count = len(detail.open_decisions)
        if open_count:
            head.append(f"  {open_count} waiting for approval", style="bold yellow")
        head.append(f"\n{detail.id}  {detail.turns} turns  last {detail.updated_at[:19].replace('T', ' ')}",
                    style="dim")
        self.query_one("#conversation-head", Static).update(head)
        wide = self.size.width >= WIDE
        policy = f"{detail.policy_name} {detail.policy_version}"
        # Render the newest items that fill the screen (the view follows the bottom); older ones only on m.
        width, room = max(20, self.size.width - 4), self.size.height + self.size.height // 4
        items: list[Text] = []
        lines = 0
        for entry in reversed(detail.entries):
            if not self.show_all and lines >= room and len(items) >= MIN_ITEMS:
                break
            item = entry_text(entry, wide, policy if wide else "")
            items.append(item)
            lines += wrapped_lines(item, width) + 1
        body = Text()
        if len(items) < len(detail.entries):
            body.append(f"({len(detail.entries) - len(items)} earlier items; m shows all)\n\n", style="dim")
        for item in reversed(items):
            body.append_text(item)
            body.append("\n")
        if not detail.entries:
            body.append("no turns yet", style="dim")
        self.query_one("#transcript", Static).update(body)

    def on_resize(self) -> None:
        if self.detail is not None:
            self.show(self.detail)

    def selected_decision(self) -> Entry | None:
        if self.detail is None or not self.detail.open_decisions:
            return None
        return self.detail.open_decisions[-1]

    def after_action(self) -> None:
        self.force_show()

    def action_more(self) -> None:
        """Show the whole transcript, not only the newest items."""
        self.show_all = True
        if self.detail is not None:
            self.show(self.detail)

    def action_back(self) -> None:
        """Back to the list."""
        self.app.pop_screen()

    def action_take_over(self) -> None:
        """Stop the agent; answer with catalog responses yourself."""
        cid = self.conversation_id

        def done(reason: str | None) -> None:
            if reason is not None:
                self.console.perform("took over the conversation", lambda ops: ops.take_over(cid, reason),
                                     self.after_action)

        self.app.push_screen(ReasonDialog("Take over this conversation"), done)

    def action_reply(self) -> None:
        """Answer the customer with a catalog response (only while taken over).

        The status is read from the store, not from the screen's last poll: right after a take-over
        the screen may not have reloaded yet, and the store is what the reply will be checked against.
        """
        cid = self.conversation_id
        try:
            conversation = self.console.store.get_conversation(cid)
            if conversation.status != "taken_over":
                self.app.notify(f"the conversation is {conversation.status}; take it over first (t)",
                                severity="warning")
                return
            catalog = self.console.ops.catalog_for(conversation)
        except Exception as exc:  # noqa: BLE001 - shown, never raised into the UI loop
            self.console.report(exc)
            return

        def done(reply: tuple[str, dict[str, Any], str] | None) -> None:
            if reply is not None:
                response_id, slots, reason = reply
                self.console.perform(f"sent {response_id}", lambda ops: ops.reply(cid, response_id, slots, reason),
                                     self.after_action)

        self.app.push_screen(ReplyDialog(catalog), done)

    def action_hand_back(self) -> None:
        """Give the conversation back to the agent at a step."""
        if self.detail is None:
            return
        if self.detail.status not in ("taken_over", "paused", "escalated"):
            self.app.notify(f"the conversation is {self.detail.status}; nothing to hand back", severity="warning")
            return
        cid = self.conversation_id
        try:
            steps = self.console.ops.step_names(cid) or [self.detail.step]
        except SopAgentError as exc:
            self.console.report(exc)
            return

        def done(picked: tuple[str, str] | None) -> None:
            if picked is not None:
                step, reason = picked
                self.console.perform(f"handed back at {step}", lambda ops: ops.hand_back(cid, step, reason),
                                     self.after_action)

        self.app.push_screen(StepDialog(steps, self.detail.step), done)

    def action_pause(self) -> None:
        """Pause the agent for this conversation, or resume it."""
        if self.detail is None:
            return
        cid = self.conversation_id
        resume = self.detail.status == "paused"

        def done(reason: str | None) -> None:
            if reason is None:
                return
            if resume:
                self.console.perform("resumed the agent", lambda ops: ops.resume(cid, reason), self.after_action)
            else:
                self.console.perform("paused the agent", lambda ops: ops.pause(cid, reason), self.after_action)

        self.app.push_screen(ReasonDialog("Resume the agent" if resume else "Pause the agent"), done)
