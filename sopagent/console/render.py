"""Turn query results into Rich text for the console: transcripts and decision details.

Pure functions (no widgets, no database), so the layout is testable and identical in every screen.
``wide`` adds the detail that fits on a wider terminal (slot values, latency per stage).
"""

from __future__ import annotations

import json

from rich.cells import cell_len
from rich.text import Text

from sopagent.console.queries import Entry
from sopagent.grounding import facts_lines
from sopagent.status import Status

STATUS_STYLE = {
    "sent": "green", "pending": "bold yellow", "escalated": "bold red", "received": "cyan",
    "active": "green", "awaiting_approval": "bold yellow", "paused": "magenta", "taken_over": "cyan",
    "closed": "dim",
}


def status_text(status: str) -> Text:
    """A status word in its colour."""
    return Text(status, style=STATUS_STYLE.get(status, ""))


def chooser(entry: Entry) -> str:
    """Who chose this decision's reply: policy, model, fallback, or the operator who settled it."""
    if entry.resolved_by:
        return f"{entry.chosen_by}, then {entry.resolved_by}"
    return entry.chosen_by


def decision_text(entry: Entry, wide: bool = False) -> Text:
    """The decision block shown under an agent turn (step, facts, options, chooser, versions, latency)."""
    out = Text()
    out.append(f"  step {entry.step} -> {entry.next_step}  ", style="dim")
    out.append_text(status_text(entry.status))
    out.append(f"  by {chooser(entry)}\n", style="dim")
    if entry.facts:
        taken, *not_taken = facts_lines(entry.facts)
        out.append(f"  facts {taken}\n", style="dim")
        for line in not_taken:
            out.append(f"  {line}\n", style="yellow")
    for option in entry.options:
        chosen = option.index == entry.chosen_index
        prob = "  n/a" if option.probability is None else f"{option.probability:5.0%}"
        line = f"  {'>' if chosen else ' '} {option.index}  {prob}  {option.response_id}"
        if wide:
            line += f" -> {option.next_step}"
            if option.slots:
                line += " " + json.dumps(option.slots, ensure_ascii=False, default=str)
        out.append(line + "\n", style="bold" if chosen else "")
        for effect in option.effects:
            out.append(f"          would do {effect}\n", style="bold" if chosen else "dim")
    for action in entry.effects:
        style = {"held": "yellow", "done": "green", "failed": "red", "cancelled": "dim"}.get(action.status, "")
        out.append("  action ", style="dim")
        out.append(f"{action.what} ")
        out.append(action.status + (" (irreversible)" if action.irreversible else ""), style=style)
        if action.result is not None:
            out.append(f" -> {action.result}")
        if action.error:
            out.append(f" ({action.error})", style="red")
        out.append("\n")
    latency = entry.latency_ms
    total = latency.get("total") or sum(v for k, v in latency.items() if k != "total")
    meta = f"  model {entry.model_name}  latency {total:.0f} ms"
    if wide and latency:
        meta += " (" + ", ".join(f"{k} {v:.0f}" for k, v in latency.items() if k != "total") + ")"
    out.append(meta + "\n", style="dim")
    if entry.error:
        out.append(f"  error: {entry.error}\n", style="red")
    if entry.status == Status.PENDING and entry.reply_text:
        out.append("  held for approval: ", style="yellow")
        out.append(entry.reply_text + "\n")
    return out


def entry_text(entry: Entry, wide: bool = False, policy: str = "") -> Text:
    """One transcript item: the customer's message, the agent's reply and the decision, or an action."""
    out = Text()
    stamp = entry.created_at[11:19] if len(entry.created_at) >= 19 else entry.created_at
    if entry.kind == "decision":
        if entry.customer_text:
            out.append(f"{stamp} customer  ", style="bold cyan")
            out.append(entry.customer_text + "\n")
        if entry.sent_text:
            out.append(f"{stamp} agent     ", style="bold green")
            out.append(entry.sent_text + "\n")
        elif entry.status == Status.RECEIVED:
            out.append("         (recorded; the agent does not answer while an operator has it)\n", style="dim")
        if entry.status != Status.RECEIVED:
            if policy:
                out.append(f"  policy {policy}\n", style="dim")
            out.append_text(decision_text(entry, wide))
    elif entry.action == "effects":  # the outcome of a decision's account actions, and the reply they filled
        out.append(f"{stamp} actions   ", style="bold blue")
        out.append(f"{entry.reason}\n", style="red" if "failed" in entry.reason else "")
        if entry.sent_text:
            out.append(f"{stamp} agent     ", style="bold green")
            out.append(entry.sent_text + "\n")
    else:
        out.append(f"{stamp} operator {entry.operator} ", style="bold magenta")
        out.append(entry.action)
        if entry.response_id:
            out.append(f" {entry.response_id}")
        if entry.next_step:
            out.append(f" -> {entry.next_step}")
        if entry.reason:
            out.append(f"  reason: {entry.reason}", style="italic")
        out.append("\n")
        if entry.sent_text:
            out.append(f"{stamp} operator  ", style="bold green")
            out.append(entry.sent_text + "\n")
    return out


def wrapped_lines(text: Text, width: int) -> int:
    """About how many lines ``text`` takes at ``width`` columns (a lower bound: words wrap a bit later)."""
    return sum(max(1, -(-cell_len(line) // width)) for line in text.plain.split("\n"))
