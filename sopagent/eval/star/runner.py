"""Replay STAR dialogues case by case through the sopagent engine, with resume.

Each case's dialogue prefix goes to :meth:`sopagent.engine.Agent.replay` (same extract / policy /
choose / commit path as a live conversation, audit store included). Results are appended to a
JSONL file as they come; a restarted run skips the cases already in it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from sopagent.errors import EvalDataError
from sopagent.eval.star.adapter import (
    DEFAULT_SETTINGS,
    KNOWN_ALLOWED,
    RecordedDialogue,
    StarSettings,
    build_policy,
    step_name,
)
from sopagent.eval.star.data import KB_BOOKKEEPING_FIELDS, QUERY_LABELS, Case, Event, TaskSchema, format_item
from sopagent.models.base import DecisionModel
from sopagent.policy import FOLLOW_UP_READINGS
from sopagent.settings import Settings

ROLE_NAMES = {"customer": "Customer", "agent": "Agent", "backend": "Knowledge base"}


def event_line(event: Event, hidden_fields: tuple[str, ...] = KB_BOOKKEEPING_FIELDS) -> str:
    """What the model is shown of one event of the dialogue.

    A knowledge-base query is shown by its label only (``[query_book]``): its parameters repeat what
    the customer said. A result is shown whole but its ``hidden_fields``, which name the API and the
    database row (:data:`KB_BOOKKEEPING_FIELDS`). Every other event is shown as recorded. The event
    itself keeps everything for the policy.
    """
    if event.role == "agent" and event.action in QUERY_LABELS:
        return f"[{event.action}]"
    if event.role == "backend" and event.item:
        return f"[result] {format_item(event.item, hidden_fields)}"
    return event.text


def transcript(history: Iterable[Event]) -> list[tuple[str, str]]:
    """The dialogue so far as (role, text) lines for the prompt (:func:`event_line` for each event)."""
    return [(ROLE_NAMES[e.role], event_line(e)) for e in history]


def read_done(path: Path) -> dict[str, dict[str, Any]]:
    """Results already in the JSONL file, by case id (a torn last line is ignored)."""
    done: dict[str, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and "case_id" in row:
                done[row["case_id"]] = row
    return done


def open_for_append(path: Path) -> Any:
    """Open the results file for appending, first ending a line torn by an interruption."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size:
        with path.open("rb") as stream:
            stream.seek(-1, 2)
            torn = stream.read(1) != b"\n"
        if torn:
            with path.open("a", encoding="utf-8") as stream:
                stream.write("\n")
    return path.open("a", encoding="utf-8")


@dataclass
class Runner:
    """Runs cases for one model, writing the audit store and the per-case JSONL under ``workdir``."""

    tasks: dict[str, TaskSchema]
    model: DecisionModel | None
    """None only where every case is already in the results file (nothing to decide)."""
    workdir: Path
    results_path: Path
    settings: Settings | None = None
    """The agent's settings (default: :meth:`Settings.load`); the audit store is always ``workdir``'s own."""
    star_settings: StarSettings = DEFAULT_SETTINGS
    """The harness's settings (the graph's prior, when a second reading is asked)."""

    def __post_init__(self) -> None:
        from sopagent.store import Store

        self.workdir.mkdir(parents=True, exist_ok=True)
        self.store = Store(f"sqlite:///{(self.workdir / 'audit.db').resolve()}")
        self._agents: dict[str, Any] = {}

    def policy(self, task: str) -> Any:
        """The sopagent policy of a task (its catalog written under ``workdir``)."""
        return build_policy(self.tasks[task], self.workdir / "catalogs", self.star_settings)

    def agent(self, task: str) -> Any:
        """The sopagent Agent of a task (built once)."""
        if task not in self._agents:
            from sopagent.compose import build_agent

            if self.model is None:
                raise EvalDataError(f"no model to decide the cases of task {task}",
                                    fix="pass --model, or leave it out for the embedded model")
            settings = self.settings if self.settings is not None else Settings.load()
            self._agents[task] = build_agent(self.policy(task), settings, model=self.model, store=self.store,
                                             tools=RecordedDialogue())
        return self._agents[task]

    def conversation(self, case: Case, resume: bool) -> str:
        """The conversation of the case's dialogue: a new one, or with ``resume`` (some of the dialogue's
        cases are done) the one they were decided in, so what the policy remembered carries on."""
        agent = self.agent(case.task)
        reference = f"star:{case.dialogue_id}"
        found = self.store.latest_conversation(reference, agent.policy.name) if resume else None
        return found.id if found is not None else agent.start(customer_ref=reference)

    def run_case(self, case: Case, conversation_id: str) -> dict[str, Any]:
        """Decide one case; return its result row."""
        agent = self.agent(case.task)
        agent.tools.history = case.history
        previous = next((e.action for e in reversed(case.history) if e.action), None)
        step = step_name(previous) if step_name(previous) in agent.policy.steps else "start"
        last = case.history[-1] if case.history else None
        customer_text = last.text if last is not None and last.role == "customer" else None
        started = time.perf_counter()
        result = agent.replay(conversation_id, transcript(case.history), step, customer_text)
        latency = (time.perf_counter() - started) * 1000
        known = json.loads(self.store.get_conversation(conversation_id).known_json)
        allowed = list(known.get(KNOWN_ALLOWED) or [])
        return {
            "case_id": case.case_id, "dialogue_id": case.dialogue_id, "task": case.task, "domain": case.domain,
            "gold": case.gold, "pred": result.response_id, "allowed": allowed,
            "label": result.facts.get("label"), "kind_probabilities": result.facts.get("probabilities") or {},
            "follow_up_readings": result.facts.get(FOLLOW_UP_READINGS) or [],
            "model_call": customer_text is not None and bool(result.facts),
            "chosen_by": result.chosen_by,
            "options": [{"id": o.response_id, "p": o.probability} for o in result.options], "error": result.error,
            "latency_ms": round(latency, 1),
        }

    def run(self, cases: list[Case], progress: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
        """Run the cases not yet in the results file (appending each as it is decided); return all rows."""
        done = read_done(self.results_path)
        rows = [done[c.case_id] for c in cases if c.case_id in done]
        conversations: dict[int, str] = {}
        resumed = {c.dialogue_id for c in cases if c.case_id in done}
        with open_for_append(self.results_path) as out:
            # by task (stable: dialogue order kept), so the task's system text stays in the KV cache
            for case in sorted(cases, key=lambda c: c.task):
                if case.case_id in done:
                    continue
                if case.dialogue_id not in conversations:
                    conversations[case.dialogue_id] = self.conversation(case, resume=case.dialogue_id in resumed)
                row = self.run_case(case, conversations[case.dialogue_id])
                out.write(json.dumps(row) + "\n")
                out.flush()
                rows.append(row)
                if progress:
                    progress(row)
        return rows
