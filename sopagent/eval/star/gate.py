"""Allowed sets from a STAR schema graph and the dialogue so far (pure code, no model).

A gate that is too strict caps accuracy (human agents skip and reorder steps); one that is too
loose leaves the procedure nothing to decide. The allowed set here is:

* after a knowledge-base result: the actions that follow SAM's result nodes, the task's
  "nothing found" replies, another query, and the generic actions;
* after a customer message: the action that follows each kind of customer message in SAM's
  graph, the successor of the agent's last action in STAR's graph, the query actions and the
  generic actions.
"""

from __future__ import annotations

from typing import Any, Sequence

from sopagent.eval.star.data import QUERY_LABELS, Event, TaskSchema

GENERIC_ACTIONS = ("anything_else", "out_of_scope", "goodbye_1", "hello", "ask_name")
"""Actions a STAR agent may take at any point (those the task defines)."""


def last_action(history: Sequence[Event]) -> str | None:
    """The agent's most recent labelled action (a picked reply or a query)."""
    return next((e.action for e in reversed(history) if e.action), None)


def actions_so_far(history: Sequence[Event]) -> list[str]:
    """Every labelled agent action so far, in order."""
    return [e.action for e in history if e.action]


def last_kind(history: Sequence[Event]) -> str:
    """What came last: ``start`` (nothing yet), ``customer``, ``backend`` or ``agent``."""
    if not history:
        return "start"
    return history[-1].role


def _result_fields(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for part in text.replace("[RESULT]", "").split(";"):
        if "=" in part:
            key, value = part.split("=", 1)
            fields[key.strip()] = value.strip()
    return fields


def result_node(task: TaskSchema, item: dict[str, Any] | None) -> str | None:
    """The SAM result node (``db_*``) that a knowledge-base item matches best, by its fields.

    A literal value in the node's template (``Message = Unavailable``) must match the item's;
    a placeholder (``[HOTEL_NAME]``) only needs the field to be present.
    """
    if not item:
        return None
    best, best_score = None, float("-inf")
    for node in task.db_nodes:
        score = 0.0
        for key, value in _result_fields(task.sam_replies[node]).items():
            if key == "APIName":
                continue
            if key not in item:
                score -= 1
                continue
            score += 1
            if not value.startswith("["):
                score += 3 if str(item[key]).strip().lower() == value.lower() else -3
        if score > best_score:
            best, best_score = node, score
    return best


def nothing_found_actions(task: TaskSchema) -> list[str]:
    """The task's replies for an empty result (``*nothing_found*``, ``*cannot*``, ``*unavailable*``)."""
    return [a for a in task.actions if any(w in a for w in ("nothing_found", "cannot", "unavailable", "failed"))]


def query_actions(task: TaskSchema) -> list[str]:
    """The task's knowledge-base actions."""
    return [a for a in task.actions if a in QUERY_LABELS]


def generic_actions(task: TaskSchema) -> list[str]:
    """The generic actions this task defines, plus its own farewell (``*_bye``)."""
    return [a for a in task.actions if a in GENERIC_ACTIONS or a.endswith("_bye")]


def expected_user_nodes(task: TaskSchema, action: str | None) -> list[str]:
    """The kinds of customer message that answer ``action`` in SAM's r_graph (start: greetings)."""
    if action is None:
        return [u for u in task.user_nodes if u not in task.sam_r_graph or task.sam_r_graph[u] == "hello"]
    return [u for u in task.user_nodes if task.sam_r_graph.get(u) == action]


def allowed_actions(task: TaskSchema, history: Sequence[Event]) -> list[str]:
    """The allowed set at this point of the dialogue (ordered, no duplicates, all task actions)."""
    kind = last_kind(history)
    previous = last_action(history)
    wanted: list[str] = []
    if kind == "backend":
        wanted += [task.sam_graph[n] for n in task.db_nodes if n in task.sam_graph]
        wanted += nothing_found_actions(task)
    else:
        wanted += [task.sam_graph[u] for u in task.user_nodes if u in task.sam_graph]
    if previous and previous in task.graph:
        wanted.append(task.graph[previous])
    wanted += query_actions(task) + generic_actions(task)
    actions = set(task.actions)
    return [a for a in dict.fromkeys(wanted) if a in actions]
