"""End to end: a real `sopagent chat` process (scripted model) writes; the console shows it live and
an operator approves; the customer's process then prints the approved reply."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import pytest
from console_support import FEE, ID_MARIA, OK
from textual.widgets import DataTable
from textual.worker import WorkerCancelled

from sopagent import Store
from sopagent.console import create_app

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    """Textual runs on asyncio."""
    return "asyncio"


class ChatProcess:
    """`sopagent chat` in a subprocess; its stdout lines collected by a thread."""

    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "sopagent.cli", "chat", *args], cwd=ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, bufsize=1)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def wait_for_line(self, wanted: Callable[[str], bool], timeout_s: float = 30) -> str | None:
        """The first printed line ``wanted`` accepts, waiting up to ``timeout_s`` for it."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = next((line for line in self.lines if wanted(line)), None)
            if found is not None or time.monotonic() >= deadline:
                return found
            time.sleep(0.1)

    def end(self) -> int:
        """Close the customer's input (end of conversation) and return the exit status."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.proc.wait(30)

    def __enter__(self) -> "ChatProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()


async def test_chat_process_waits_for_the_console_to_approve(store: Store, tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"facts": [FEE, ID_MARIA, {"fee_type": "annual", "handoff": OK}],
                                  "choices": [[0.45, 0.55]]}))
    with ChatProcess([str(ROOT / "policies" / "card_services.py"), "--db", store.url, "--model",
                      f"scripted:{script}", "--confidence", "0.6", "--customer", "cust-e2e",
                      "--wait-operator", "60"]) as chat:
        for text in ("please refund a fee", "4821, 14 March 1985", "the annual fee, it was your mistake"):
            chat.send(text)
        app = create_app(store, "ana", poll_interval=0.1)
        async with app.run_test(size=(100, 30)) as pilot:
            table = app.screen.query_one("#conversations", DataTable)
            for _ in range(200):  # the other process writes while the list is on screen
                await pilot.pause(0.1)
                rows = [[str(getattr(c, "plain", c)) for c in table.get_row_at(i)] for i in range(table.row_count)]
                if rows and rows[0][0] == "cust-e2e" and rows[0][4] == "1":
                    break
            assert rows[0][0] == "cust-e2e" and rows[0][3] == "awaiting_approval" and rows[0][4] == "1"
            assert any("waiting for an operator" in line for line in chat.lines)
            await pilot.press("a")
            await pilot.pause(0.3)
            await pilot.press("a", *"goodwill", "enter")
            try:
                await app.workers.wait_for_complete()
            except WorkerCancelled:
                pass
        approved = chat.wait_for_line(lambda line: "The annual fee of €95.00" in line)
        assert approved and approved.startswith("agent> ")
        assert chat.lines.index(approved) > max(i for i, line in enumerate(chat.lines) if "waiting" in line)
        assert chat.end() == 0
    action, effects = store.actions()
    assert (action.action, action.operator, action.reason) == ("approve", "ana", "goodwill")
    # the approval released the supervisor review; the chat process, which has the bank's backend, ran it
    assert (effects.action, effects.operator, effects.sent_text) == ("effects", "agent", approved.removeprefix("agent> "))
    assert [(e.name, e.status) for e in store.effects()] == [("request_supervisor_review", "done")]


async def test_chat_process_receives_the_reply_an_operator_sends_after_taking_over(store: Store,
                                                                                   tmp_path: Path) -> None:
    """Seen in tmux: the console's catalog reply during a take-over never reached `sopagent chat`."""
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"facts": [FEE], "choices": []}))
    with ChatProcess([str(ROOT / "policies" / "card_services.py"), "--db", store.url, "--model",
                      f"scripted:{script}", "--customer", "cust-takeover"]) as chat:
        chat.send("please refund a fee")
        app = create_app(store, "ana", poll_interval=0.1)
        async with app.run_test(size=(100, 30)) as pilot:
            table = app.screen.query_one("#conversations", DataTable)
            for _ in range(200):
                await pilot.pause(0.1)
                if table.row_count and any(line.startswith("agent> ") for line in chat.lines):
                    break
            await pilot.press("enter")  # open the conversation
            await pilot.pause(0.5)
            await pilot.press("t", *"customer asked for a person", "enter")
            for _ in range(50):
                await pilot.pause(0.1)
                if any(action.action == "take_over" for action in store.actions()):
                    break
            await pilot.press("r")
            await pilot.pause(0.3)
            await pilot.press(*"ask_fee_type", "enter", "enter", "enter")  # search, pick, send from the reason
            try:
                await app.workers.wait_for_complete()
            except WorkerCancelled:
                pass
        (take_over, reply) = store.actions()
        assert (take_over.action, reply.action, reply.response_id) == ("take_over", "operator_reply", "ask_fee_type")
        assert chat.wait_for_line(lambda line: line == f"agent> {reply.sent_text}")
        assert chat.end() == 0
