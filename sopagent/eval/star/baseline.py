"""The unconstrained, prompt-only baseline: what an agent does when the model writes the reply.

The same model is shown the allowed replies and the conversation and asked to write the reply it
would send, with free generation. A reply that is not exactly one of the allowed replies (STAR's
template fields such as ``{time}`` match any text) is a violation: the very thing constrained
decoding removes. Its accuracy is counted where it is exactly one of them.
"""

from __future__ import annotations

import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from sopagent import prompts
from sopagent.eval.star import gate
from sopagent.eval.star.data import QUERY_LABELS, Case, TaskSchema
from sopagent.eval.star.runner import open_for_append, read_done, transcript
from sopagent.models.base import ChatPrompt

MAX_REPLY_TOKENS = 48
SYSTEM = ("You are a customer-support agent for the task '{task}'. You may only send one of these approved "
          "replies, copied exactly (write QUERY to look something up in the knowledge base):\n{replies}")


def _normal(text: str) -> str:
    return " ".join(text.strip().strip('"').split())


def reply_pattern(text: str) -> re.Pattern[str]:
    """An approved reply as a regex: its template fields match any text."""
    parts = re.split(r"\{[^{}]*\}", _normal(text))
    return re.compile(".+?".join(re.escape(p) for p in parts), re.DOTALL)


def match_reply(task: TaskSchema, allowed: list[str], text: str) -> str | None:
    """The allowed action whose reply the text is exactly (queries: the word QUERY), else None."""
    written = _normal(text)
    for action in allowed:
        if action in QUERY_LABELS:
            if written.upper() == "QUERY":
                return action
            continue
        if reply_pattern(task.text(action)).fullmatch(written):
            return action
    return None


def baseline_prompt(task: TaskSchema, allowed: list[str], case: Case) -> ChatPrompt:
    """Approved replies first (before the conversation), then the conversation, then the request."""
    replies = "\n".join(f"- {'QUERY' if a in QUERY_LABELS else task.text(a)}" for a in allowed)
    system = SYSTEM.format(task=task.name.replace("_", " "), replies=replies)
    return ChatPrompt(system, prompts.transcript_text(transcript(case.history)),
                      "Write the reply you send now: exactly one of the approved replies, nothing else.")


@dataclass
class BaselineRunner:
    """Runs the free-generation baseline case by case with resume."""

    tasks: dict[str, TaskSchema]
    model: Any
    results_path: Path

    def run(self, cases: list[Case], progress: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
        """Run the cases not yet in the results file; return all rows."""
        import json

        done = read_done(self.results_path)
        rows = [done[c.case_id] for c in cases if c.case_id in done]
        with open_for_append(self.results_path) as out:
            for case in cases:
                if case.case_id in done:
                    continue
                task = self.tasks[case.task]
                allowed = gate.allowed_actions(task, case.history)
                started = time.perf_counter()
                text, _ = self.model.generate_free(baseline_prompt(task, allowed, case), MAX_REPLY_TOKENS)
                latency = (time.perf_counter() - started) * 1000
                matched = match_reply(task, allowed, text)
                row = {"case_id": case.case_id, "domain": case.domain, "task": case.task, "gold": case.gold,
                       "allowed": allowed, "text": text, "pred": matched, "latency_ms": round(latency, 1)}
                out.write(json.dumps(row) + "\n")
                out.flush()
                rows.append(row)
                if progress:
                    progress(row)
        return rows

    @staticmethod
    def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Violation rate and accuracy (overall and where the reply was valid) per domain and overall."""
        by_domain: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_domain.setdefault(row["domain"], []).append(row)

        def figures(group: list[dict[str, Any]]) -> dict[str, Any]:
            valid = [r for r in group if r["pred"] is not None]
            return {"cases": len(group), "violations": len(group) - len(valid),
                    "violation_rate": (len(group) - len(valid)) / len(group) if group else 0.0,
                    "accuracy": sum(r["pred"] == r["gold"] for r in group) / len(group) if group else 0.0,
                    "accuracy_when_valid": sum(r["pred"] == r["gold"] for r in valid) / len(valid) if valid else 0.0,
                    "median_latency_ms": statistics.median(r["latency_ms"] for r in group) if group else 0.0}

        return {"domains": {d: figures(g) for d, g in sorted(by_domain.items())}, "overall": figures(rows),
                "baseline": "free generation"}

    @staticmethod
    def format(summary: dict[str, Any]) -> str:
        """The baseline table."""
        lines = [f"{'domain':<12}{'cases':>6}{'viol':>7}{'acc':>7}{'acc|valid':>11}{'p50 ms':>9}"]
        for name, d in [*summary["domains"].items(), ("overall", summary["overall"])]:
            lines.append(f"{name:<12}{d['cases']:>6}{d['violation_rate']:>7.1%}{d['accuracy']:>7.1%}"
                         f"{d['accuracy_when_valid']:>11.1%}{d['median_latency_ms']:>9.0f}")
        return "\n".join(lines)
