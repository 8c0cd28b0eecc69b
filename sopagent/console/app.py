"""The operator console app and its factory (:func:`create_app`), reused by the CLI, tests and benchmarks.

The app reads the audit store that agents in other processes write to. Database reads and operator
actions run in thread workers; the UI loop only renders their results. Every operator action goes
through :class:`~sopagent.operations.Operations`, so it is a chained audit record with the operator's
name, time and reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from textual.app import App
from textual.binding import Binding

from sopagent.errors import SopAgentError
from sopagent.models.base import DecisionModel
from sopagent.operations import Operations
from sopagent.settings import Settings
from sopagent.store import Store

Progress = Callable[[int, int], None]
ModelFactory = Callable[[Progress], DecisionModel]
"""Builds the model for "try a policy"; called in a worker thread with a progress callback."""

DEFAULT_POLICIES = Path("policies")


def default_model_factory(settings: Settings | None = None) -> ModelFactory:
    """A factory that loads the model the settings name (default: :meth:`Settings.load`)."""

    def build(progress: Progress) -> DecisionModel:
        from sopagent.compose import open_model

        return open_model(settings if settings is not None else Settings.load(), progress=progress)

    return build


class ConsoleApp(App[None]):
    """Supervise live conversations: list, transcript and decisions, approvals, take-over, audit, try."""

    CSS_PATH = "console.tcss"
    TITLE = "sopagent console"
    BINDINGS = [
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("q", "quit", "Quit", show=False),
    ]

    def __init__(self, store: Store, operator: str, *, model_factory: ModelFactory | None = None,
                 policies_dir: Path | str = DEFAULT_POLICIES, poll_interval: float = 1.0,
                 settings: Settings | None = None) -> None:
        """
        Args:
            store: the audit store agents write to.
            operator: the name recorded on every action this console takes.
            model_factory: builds the model for "try a policy" (tests pass a ScriptedModel).
            policies_dir: where "try a policy" lists policy files.
            poll_interval: seconds between database polls (0 turns polling off; refresh with ctrl+r).
            settings: the model and agent settings of "try a policy" (default: :meth:`Settings.load`).
        """
        super().__init__()
        self.settings = settings if settings is not None else Settings.load()
        self.store = store
        self.ops = Operations(store, operator)
        self.operator = self.ops.operator
        self.model_factory = model_factory or default_model_factory(self.settings)
        self.policies_dir = Path(policies_dir)
        self.poll_interval = poll_interval
        self.sub_title = f"operator {self.operator}  |  {store.url}"

    def on_mount(self) -> None:
        """Open the conversation list."""
        from sopagent.console.screens.conversations import ConversationsScreen

        self.push_screen(ConversationsScreen())
        self.call_after_refresh(self.freeze_startup_objects)

    def freeze_startup_objects(self) -> None:
        """Take what lives as long as the app (modules, styles, first screen) out of the collector's scans.

        Textual allocates many short-lived objects per render, so CPython's full (oldest generation)
        collections run every few screen changes; each one scanned every long-lived object (about
        110,000) and took about 100 ms of CPU, landing on whichever key press triggered it. After
        ``gc.freeze`` one takes about 25 ms (benchmarks/console_latency.py store). The young
        generations are collected first, so that their garbage is not frozen.
        """
        import gc

        gc.collect(1)
        gc.freeze()

    def action_help(self) -> None:
        """Show the key bindings of the current screen."""
        from sopagent.console.screens.dialogs import HelpScreen

        if isinstance(self.screen, HelpScreen):
            return
        keys: list[tuple[str, str]] = []
        seen: set[str] = set()
        ranked = sorted(self.screen.active_bindings.values(),
                        key=lambda a: 0 if a.node is self.screen else 1 if a.node is self else 2)
        for active in ranked:
            binding = active.binding
            description = binding.tooltip or binding.description or (
                binding.action.replace("_", " ") if binding.show else "")
            if description and description not in seen:
                seen.add(description)
                keys.append((binding.key_display or self.get_key_display(binding), description))
        title = (type(self.screen).__doc__ or "").strip().splitlines()[0]
        self.push_screen(HelpScreen(title, keys))

    def report(self, exc: BaseException) -> None:
        """Show an error as a notification (never a traceback); safe to call from any thread."""
        message = str(exc) if isinstance(exc, SopAgentError) else f"{type(exc).__name__}: {exc}"
        self._notify_safely(message, "error")

    def _notify_safely(self, message: str, severity: str) -> None:
        import threading

        if threading.get_ident() == self._thread_id:
            self.notify(message, severity=severity, timeout=6)  # type: ignore[arg-type]
        else:
            self.call_from_thread(self.notify, message, severity=severity, timeout=6)

    def perform(self, label: str, run: Callable[[Operations], Any], then: Callable[[], None] | None = None) -> None:
        """Run an operator action in a worker thread; notify the outcome; then refresh via ``then``."""

        def work() -> None:
            try:
                run(self.ops)
            except SopAgentError as exc:
                self.report(exc)
            else:
                self._notify_safely(f"{label} (recorded as {self.operator})", "information")
            if then is not None:
                self.call_from_thread(then)

        self.run_worker(work, thread=True, group="actions", name=label)


def create_app(store: Store, operator: str, *, model_factory: ModelFactory | None = None,
               policies_dir: Path | str = DEFAULT_POLICIES, poll_interval: float = 1.0,
               settings: Settings | None = None) -> ConsoleApp:
    """Build the console app (the one factory the CLI, the tests and the benchmark use)."""
    return ConsoleApp(store, operator, model_factory=model_factory, policies_dir=policies_dir,
                      poll_interval=poll_interval, settings=settings)
