"""Try a policy: a test conversation typed as a customer would, with each decision beside it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Input, OptionList, ProgressBar, Static
from textual.widgets.option_list import Option

from sopagent.console.queries import conversation_detail
from sopagent.console.render import decision_text
from sopagent.console.widgets import KeyFooter, TitleBar
from sopagent.errors import SopAgentError


def policy_files(folder: Path) -> list[Path]:
    """Policy modules in ``folder`` (files that define a ``Policy(``), sorted by name."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.py") if "Policy(" in p.read_text(encoding="utf-8", errors="replace"))


class TryPolicyScreen(Screen[None]):
    """Pick a policy, load the model in the background, then talk to it as a customer."""

    BINDINGS = [Binding("escape", "back", "Back")]

    def __init__(self) -> None:
        super().__init__()
        self.agent: Any = None
        self.conversation_id: str | None = None
        self.transcript = Text()

    @property
    def console(self) -> Any:
        """The console app."""
        return self.app

    def compose(self) -> ComposeResult:
        yield TitleBar()
        files = policy_files(self.console.policies_dir)
        yield Static(f"Pick a policy from {self.console.policies_dir}/" if files else
                     f"no policy files in {self.console.policies_dir}/; start the console where policies/ is",
                     id="try-info")
        yield OptionList(*[Option(p.name, id=str(p)) for p in files], id="policies")
        yield ProgressBar(total=100, show_eta=False, id="model-progress")
        with Horizontal(id="try-body"):
            with VerticalScroll(id="try-chat-scroll"):
                yield Static("", id="try-chat")
            with VerticalScroll(id="try-decision-scroll"):
                yield Static("", id="try-decision")
        yield Input(placeholder="type as the customer would, Enter sends", id="try-input", disabled=True)
        yield KeyFooter()

    def on_mount(self) -> None:
        self.query_one("#model-progress").display = False
        self.query_one("#try-body").display = False
        self.query_one(OptionList).focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        path = Path(str(event.option.id))
        self.query_one(OptionList).display = False
        bar = self.query_one("#model-progress", ProgressBar)
        bar.display = True
        self.query_one("#try-info", Static).update(f"loading the model for {path.name} ...")
        self.run_worker(lambda: self._load(path), thread=True, exclusive=True, group="try-load")

    def _load(self, path: Path) -> None:
        from sopagent.compose import build_agent
        from sopagent.policy import load_policy

        def progress(done: int, total: int) -> None:
            self.app.call_from_thread(self._progress, done, total)

        try:
            policy = load_policy(path)
            model = self.console.model_factory(progress)
            agent = build_agent(policy, self.console.settings, model=model, store=self.console.store)
            conversation_id = agent.start(customer_ref=f"try:{self.console.operator}",
                                          metadata={"test": True, "operator": self.console.operator})
        except SopAgentError as exc:
            self.app.call_from_thread(self._failed, exc)
            return
        self.app.call_from_thread(self._ready, agent, conversation_id)

    def _progress(self, done: int, total: int) -> None:
        self.query_one("#model-progress", ProgressBar).update(total=total, progress=done)

    def _failed(self, exc: SopAgentError) -> None:
        self.query_one("#try-info", Static).update(Text(f"could not start: {exc}", style="red"))
        self.query_one("#model-progress").display = False
        self.query_one(OptionList).display = True
        self.console.report(exc)

    def _ready(self, agent: Any, conversation_id: str) -> None:
        self.agent, self.conversation_id = agent, conversation_id
        self.query_one("#model-progress").display = False
        self.query_one("#try-body").display = True
        self.query_one("#try-info", Static).update(
            f"{agent.policy.name} on {agent.model.name}: conversation {conversation_id[:8]} (shown in the list)")
        box = self.query_one("#try-input", Input)
        box.disabled = False
        box.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text or self.agent is None:
            return
        event.input.value = ""
        event.input.disabled = True
        self.transcript.append("customer  ", style="bold cyan")
        self.transcript.append(text + "\n")
        self.query_one("#try-chat", Static).update(self.transcript)
        self.run_worker(lambda: self._respond(text), thread=True, group="try-turn")

    def _respond(self, text: str) -> None:
        try:
            self.agent.respond(self.conversation_id, text)
            detail = conversation_detail(self.console.store, str(self.conversation_id))
        except SopAgentError as exc:
            self.console.report(exc)
            self.app.call_from_thread(self._enable)
            return
        self.app.call_from_thread(self._answered, detail.entries[-1])

    def _answered(self, entry: Any) -> None:
        if entry.sent_text:
            self.transcript.append("agent     ", style="bold green")
            self.transcript.append(entry.sent_text + "\n")
        if entry.status == "pending":
            self.transcript.append("          (held for approval: see the approval queue)\n", style="yellow")
        self.query_one("#try-chat", Static).update(self.transcript)
        self.query_one("#try-decision", Static).update(decision_text(entry, wide=True))
        self._enable()

    def _enable(self) -> None:
        box = self.query_one("#try-input", Input)
        box.disabled = False
        box.focus()

    def action_back(self) -> None:
        """Back to the list (the test conversation stays in the store)."""
        self.app.pop_screen()
