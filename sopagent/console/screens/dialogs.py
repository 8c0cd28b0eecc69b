"""Modal dialogs: a reason, another allowed option, a catalog reply with typed slots, a step, help."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from sopagent.catalog import Catalog, Response
from sopagent.console.queries import OptionLine


class ReasonDialog(ModalScreen[str | None]):
    """Ask for the reason of an action; Enter confirms (an empty reason is allowed), Escape cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str) -> None:
        super().__init__()
        self.title_text = title

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield Input(placeholder="reason (recorded in the audit log; Enter to confirm)", id="reason")
            yield Static("Enter confirms, Escape cancels", classes="dialog-help")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip())

    def action_cancel(self) -> None:
        """Close without acting."""
        self.dismiss(None)


class OverrideDialog(ModalScreen[tuple[int, str] | None]):
    """Pick another option from the decision's allowed set, with a reason."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, options: list[OptionLine], chosen: int | None) -> None:
        super().__init__()
        self.options = options
        self.chosen = chosen

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Send another allowed option instead", classes="dialog-title")
            yield Input(placeholder="reason (Enter, then pick an option)", id="reason")
            yield OptionList(*[Option(_option_label(o, o.index == self.chosen), id=str(o.index),
                                      disabled=o.index == self.chosen)  # sending that one is approving
                               for o in self.options], id="choices")
            yield Static("Type a reason, Enter, arrows and Enter to send; Escape cancels", classes="dialog-help")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        choices = self.query_one(OptionList)
        choices.focus()
        if choices.highlighted is None:  # start on the first option that can be sent
            choices.highlighted = next((i for i, o in enumerate(self.options) if o.index != self.chosen), None)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss((int(event.option.id or 0), self.query_one("#reason", Input).value.strip()))

    def action_cancel(self) -> None:
        """Close without acting."""
        self.dismiss(None)


def _option_label(option: OptionLine, chosen: bool) -> str:
    prob = "n/a" if option.probability is None else f"{option.probability:.0%}"
    return f"{option.index}  {prob:>4}  {option.response_id}{'  (agent chose)' if chosen else ''}"


class ReplyDialog(ModalScreen[tuple[str, dict[str, Any], str] | None]):
    """Answer the customer with a catalog response: search, pick, fill its typed slots, send.

    Never free text: the operator chooses a response id and types slot values; the catalog
    validates them before the dialog closes (and :meth:`Operations.reply` validates again).
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("ctrl+s", "send", "Send")]

    def __init__(self, catalog: Catalog) -> None:
        super().__init__()
        self.catalog = catalog
        self.response: Response | None = None

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label("Reply with a catalog response", classes="dialog-title")
            yield Input(placeholder="search responses (id or text)", id="reply-search")
            yield OptionList(id="responses")
            yield Static("", id="reply-preview")
            yield VerticalScroll(id="slots")
            yield Input(placeholder="reason (optional)", id="reply-reason")
            yield Static("", id="reply-error", classes="error")
            yield Static("Enter picks a response; fill the slots and the reason; Enter there or ctrl+s sends; "
                         "Escape cancels",
                         classes="dialog-help")

    def on_mount(self) -> None:
        self._fill("")
        self.query_one("#reply-search", Input).focus()

    def _fill(self, text: str) -> None:
        needle = text.lower().strip()
        options = self.query_one("#responses", OptionList)
        options.clear_options()
        for response in self.catalog.responses.values():
            if needle in response.id or needle in response.text.lower():
                options.add_option(Option(f"{response.id}  {response.description}", id=response.id))
        if options.option_count:
            options.highlighted = 0

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "reply-search":
            self._fill(event.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "reply-search":
            self.query_one("#responses", OptionList).focus()
        elif event.input.id == "reply-reason" or (event.input.id or "").startswith("slot-"):
            self.action_send()

    async def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.response = self.catalog[str(event.option.id)]
        self.query_one("#reply-preview", Static).update(Text(self.response.text))
        slots = self.query_one("#slots", VerticalScroll)
        await slots.remove_children()
        inputs = [Input(placeholder=f"{name}: {_slot_hint(slot)}", id=f"slot-{name}")
                  for name, slot in self.response.slots.items()]
        await slots.mount_all(inputs)
        (inputs[0] if inputs else self.query_one("#reply-reason", Input)).focus()

    def values(self) -> dict[str, Any]:
        """The typed slot values (integers converted; everything else is validated by the slot)."""
        assert self.response is not None
        values: dict[str, Any] = {}
        for name, slot in self.response.slots.items():
            raw = self.query_one(f"#slot-{name}", Input).value.strip()
            values[name] = int(raw) if slot.type == "integer" and raw.lstrip("-").isdigit() else raw
        return values

    def action_send(self) -> None:
        """Validate the slots with the catalog and close with the reply, or show what is wrong."""
        if self.response is None:
            self.query_one("#reply-error", Static).update("pick a response first (Enter on the list)")
            return
        values = self.values()
        try:
            self.response.render(values)
        except ValueError as exc:
            self.query_one("#reply-error", Static).update(f"{exc}; correct the value and press ctrl+s")
            return
        self.dismiss((self.response.id, values, self.query_one("#reply-reason", Input).value.strip()))

    def action_cancel(self) -> None:
        """Close without sending."""
        self.dismiss(None)


def _slot_hint(slot: Any) -> str:
    kind = getattr(slot, "type", "text")
    if kind == "enum":
        return "one of " + ", ".join(slot.values)
    if kind == "date":
        return "date YYYY-MM-DD"
    if kind == "money":
        return f"amount in {slot.currency}"
    if kind == "pattern":
        return f"text matching {slot.pattern}"
    return str(kind)


class StepDialog(ModalScreen[tuple[str, str] | None]):
    """Pick the step at which the agent takes the conversation back, with a reason."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, steps: list[str], current: str) -> None:
        super().__init__()
        self.steps = steps
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Hand back to the agent at step", classes="dialog-title")
            yield Input(placeholder="reason (Enter, then pick a step)", id="reason")
            yield OptionList(*[Option(s + ("  (current)" if s == self.current else ""), id=s) for s in self.steps],
                             id="steps")
            yield Static("Type a reason, Enter, arrows and Enter to hand back; Escape cancels",
                         classes="dialog-help")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.query_one(OptionList).focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss((str(event.option.id), self.query_one("#reason", Input).value.strip()))

    def action_cancel(self) -> None:
        """Close without acting."""
        self.dismiss(None)


class HelpScreen(ModalScreen[None]):
    """The key bindings active on the screen underneath (the same ones the footer shows, and more)."""

    BINDINGS = [Binding("escape,question_mark,q", "close", "Close")]

    def __init__(self, title: str, keys: list[tuple[str, str]]) -> None:
        super().__init__()
        self.title_text = title
        self.keys = keys

    def compose(self) -> ComposeResult:
        lines = Text()
        for key, description in self.keys:
            lines.append(f"{key:>12}  ", style="bold")
            lines.append(f"{description}\n")
        with Vertical(classes="dialog"):
            yield Label(f"Keys: {self.title_text}", classes="dialog-title")
            with VerticalScroll(id="help-scroll"):
                yield Static(lines, id="help-keys")
            yield Static("Escape closes", classes="dialog-help")

    def action_close(self) -> None:
        """Close the help."""
        self.dismiss(None)
