"""The customer's side of what operators do: approvals, and replies sent during a take-over.

``sopagent chat`` hands every pending decision to a :class:`ResolutionWatcher`, which polls
``Store.resolution(decision_id)`` in a background thread (the customer may keep typing) and prints
the approved or overridden reply when an operator in the console settles it. It also follows the
conversation, so the catalog replies an operator sends after taking it over reach the customer.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Callable, TextIO

from sopagent.errors import StoreError
from sopagent.store import OperatorAction, Store

EffectsRunner = Callable[[int], object]
"""Runs a decision's released effects (``EffectRunner.run_decision``)."""


class ResolutionWatcher:
    """Polls the store for the resolution of pending decisions and prints what the customer receives."""

    def __init__(self, store: Store, out: TextIO, *, interval_s: float = 0.5, jsonl: bool = False,
                 interactive: bool = False, run_effects: EffectsRunner | None = None) -> None:
        self.interactive = interactive
        """At a terminal the reply arrives while ``you>`` waits for input: start it on a new line."""
        self.store = store
        self.run_effects = run_effects
        """Runs the actions an approval released (the agent's effect runner), so their reply can be sent."""
        self.out = out
        self.interval_s = interval_s
        self.jsonl = jsonl
        self.lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    def say(self, line: str) -> None:
        """Print one line without interleaving with other threads."""
        with self.lock:
            print(line, file=self.out, flush=True)

    def watch(self, decision_id: int) -> None:
        """Start waiting for an operator to settle ``decision_id``."""
        if not self.jsonl:
            self.say("  (waiting for an operator to review this reply; you may keep typing)")
        thread = threading.Thread(target=self._poll, args=(decision_id,), daemon=True,
                                  name=f"resolution-{decision_id}")
        self._threads.append(thread)
        thread.start()

    def follow(self, conversation_id: str) -> None:
        """Print the catalog replies operators send in this new conversation (after a take-over)."""
        thread = threading.Thread(target=self._follow, args=(conversation_id,), daemon=True,
                                  name=f"operator-replies-{conversation_id}")
        thread.start()

    def _follow(self, conversation_id: str) -> None:
        seen = 0  # the conversation is new: every operator reply in it is for this customer
        while not self._stop.is_set():
            try:
                replies = self.store.operator_replies(conversation_id, seen)
            except StoreError:
                replies = []  # a locked database clears by itself; poll again
            for action in replies:
                seen = action.seq
                self._print_reply(action)
            self._stop.wait(self.interval_s)

    def _print_reply(self, action: OperatorAction) -> None:
        if self.jsonl:
            self.say(json.dumps({"operator_reply": action.id, "operator": action.operator,
                                 "response_id": action.response_id, "reply": action.sent_text}, ensure_ascii=False))
        else:
            lead = "\n" if self.interactive else ""
            self.say(f"{lead}agent> {action.sent_text}")

    def close(self) -> None:
        """Stop polling (the conversation is over for this process)."""
        self._stop.set()

    def _poll(self, decision_id: int) -> None:
        while not self._stop.is_set():
            try:
                action = self.store.resolution(decision_id)
            except StoreError:
                action = None  # a locked database clears by itself; poll again
            if action is not None and action.action != "escalate" and action.sent_text is None:
                action = self._after_effects(decision_id)
            if action is not None:
                self._print(decision_id, action)
                return
            self._stop.wait(self.interval_s)

    def _after_effects(self, decision_id: int) -> OperatorAction | None:
        """The approved reply waits for the actions it released: run them (when this process has the
        agent's backend) and return the chained outcome that carries the reply, or None to poll on."""
        if self.run_effects is not None:
            self.run_effects(decision_id)
        return self.store.effects_outcome(decision_id)

    def _print(self, decision_id: int, action: OperatorAction) -> None:
        if self.jsonl:
            self.say(json.dumps({"decision_id": decision_id, "resolution": action.action,
                                 "operator": action.operator, "response_id": action.response_id,
                                 "reply": action.sent_text}, ensure_ascii=False))
        else:
            lead = "\n" if self.interactive else ""
            text = action.sent_text or "(an operator escalated this conversation; a colleague will contact you)"
            self.say(f"{lead}agent> {text}")

    def pending(self) -> int:
        """How many watched decisions are still unresolved."""
        return sum(thread.is_alive() for thread in self._threads)

    def wait(self, timeout_s: float) -> bool:
        """Block until every watched decision is settled or ``timeout_s`` passes; True if all settled."""
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._stop.set()
        return self.pending() == 0
