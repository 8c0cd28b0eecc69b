"""A STAR task schema as an ordinary sopagent policy and response catalog.

* The catalog is the task's replies (query labels are knowledge-base actions, described as such).
* One step per agent action, ``after_<action>`` (plus ``start``): the step the conversation is in
  after the agent took that action. Every step reads the customer's latest message as one of
  SAM's kinds of customer message (a :class:`~sopagent.policy.OneOf`: one constrained token,
  with every kind's probability) and runs :func:`next_action`, plain policy code.
* The model only reads language; the procedure is code: the kind of message the graph expects
  after our last action is a prior, the graph gives the action that follows the kind of message,
  a knowledge-base result is matched to SAM's result nodes without any model call.
* Where the two best actions after a customer message are a close call, a second reading
  (``turn.read``, one letter) chooses between only the two kinds of message behind them
  (:func:`settle_close_call`).
* Before the agent asks the customer for a fact, a follow-up reading (``turn.read``) looks for the
  customer's answer in the conversation (:func:`skip_given`); an answer found is kept in the
  conversation's known facts (``star_given``) and not read again.

The allowed set of every decision (the gate) is recorded in the conversation's known facts
(:data:`KNOWN_ALLOWED`); the chosen action is always one of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Protocol, Sequence, TypeGuard, TypeVar

import yaml
from pydantic import BaseModel, Field

from sopagent.eval.star import gate
from sopagent.eval.star.data import QUERY_LABELS, Event, TaskSchema
from sopagent.policy import Facts, OneOf, Option, Policy, Turn, say

R = TypeVar("R", bound=BaseModel)

MAX_KINDS = 26
"""A choice is one letter, so at most 26 kinds of customer message are offered."""
KIND_QUESTION = "Which kind listed above is the customer's latest message?"
"""The message reading's question, told once in the system text after the kinds of message
(:attr:`~sopagent.policy.OneOf.in_policy_text`): the message is the dialogue's last line, so a reading
evaluates only the dialogue's new lines."""
CLOSER_QUESTION = "Which of these two is closer to what the customer's latest message means?"
"""The close-call reading's question; the two kinds follow it, lettered, in the order of their weight."""
GIVEN_QUESTION = ("Fill in the customer's answer to \"{question}\" using only what the customer wrote above. "
                  "Use null if the customer never said it. JSON: {{\"answer\": ...}}")
"""Asked before the agent asks the customer something: has the customer already said it? Worded so
the model copies the value (``{question}`` is the text the agent would send)."""
KNOWN_GIVEN = "star_given"
"""Key of the conversation's known facts that holds the answers already found (action -> answer)."""
KNOWN_ALLOWED = "star_allowed"
"""Key of the conversation's known facts that holds the allowed set of the latest decision."""
NOT_GIVEN = frozenset({"", "null", "none", "n/a", "no", "unknown"})
"""Answers that mean the customer has not said it."""


@dataclass(frozen=True)
class StarSettings:
    """The harness's settings: the graph's prior and when a second reading is asked.

    The defaults are the settings every published figure was made with; they were chosen on the two
    40-case tuning samples (``--limit-per-domain 40`` at offsets 0 and 40) and checked on the other
    cases. ``benchmarks/star.py redecide --set NAME=VALUE`` measures another value against them on a
    recorded run.
    """

    expected_weight: float = 16.0
    """How much more likely a kind of message is when it answers our last action (the graph's prior)."""
    closing_weight: float = 1.0
    """How much more likely a closing kind of message (one that leads to :func:`closing_actions`) is
    where it does not answer our last action; 1 leaves SAM's graph alone as the prior."""
    answered_threshold: float = 0.2
    """A question counts as already answered when the kinds of message that answer it have at least
    this much probability in the message reading; below it, the follow-up reading decides."""
    close_call_ratio: float | None = 0.6
    """Two best actions whose weights are within this ratio are a close call, read again between only
    the two kinds of message behind them (:func:`settle_close_call`); None: never read again."""
    second_kind_above: float = 0.5
    """A close call goes to the second kind only when the two-way reading gives it more than this (the
    model leans to the first letter)."""
    read_given: bool = True
    """Before asking the customer for a fact, look for the answer in the conversation
    (:func:`skip_given`, one short JSON reading per question)."""


DEFAULT_SETTINGS = StarSettings()
"""The settings the harness runs with."""


class GivenAnswer(Facts):
    """The customer's answer to a question the agent is about to ask, where the conversation holds it."""

    answer: Optional[str] = Field(None, max_length=60, description="the value the customer gave, or null")


@dataclass
class RecordedDialogue:
    """The back end of a replayed dialogue: what the agent has done and what the knowledge base returned."""

    history: Sequence[Event] = field(default_factory=tuple)

    @property
    def last_result(self) -> dict[str, Any] | None:
        """The knowledge-base item returned since the agent's last action, if the last event is one."""
        if self.history and self.history[-1].role == "backend":
            return self.history[-1].item or {}
        return None


def step_name(action: str | None) -> str:
    """The step a conversation is in after the agent's ``action`` (``start`` before any)."""
    return "start" if action is None else f"after_{action}"


def _kind_text(task: TaskSchema, node: str) -> str:
    name = node.removeprefix("user_")
    for prefix in (task.name + "_", task.domain + "_"):
        name = name.removeprefix(prefix)
    return f"{name.replace('_', ' ')}: \"{task.sam_replies[node]}\""


def message_kinds(task: TaskSchema) -> dict[str, str]:
    """SAM's kinds of customer message (label -> description with its example), at most 26."""
    return {node: _kind_text(task, node) for node in task.user_nodes[:MAX_KINDS]}


def catalog_yaml(task: TaskSchema) -> str:
    """The task's replies as a sopagent catalog (braces of STAR's own templates kept literal)."""
    responses = []
    for action in task.actions:
        text = task.text(action)
        if action in QUERY_LABELS:
            description = f"Look up the knowledge base ({action}); not sent to the customer."
        else:
            description = text
        responses.append({"id": action, "text": text.replace("{", "{{").replace("}", "}}"),
                          "description": description.replace("{", "(").replace("}", ")")})
    return yaml.safe_dump({"catalog": f"star_{task.name}", "version": "star-1", "responses": responses},
                          sort_keys=False, allow_unicode=True)


def closing_actions(task: TaskSchema) -> list[str]:
    """The task's actions that close a conversation: "anything else?", the farewells (``goodbye_1``,
    ``*_bye``)."""
    return [a for a in gate.generic_actions(task) if a in ("anything_else", "goodbye_1") or a.endswith("_bye")]


def kind_weights(task: TaskSchema, history: Sequence[Event], settings: StarSettings = DEFAULT_SETTINGS
                 ) -> dict[str, float]:
    """The graph's prior on each kind of customer message after our last action: ``expected_weight``
    for the kinds that answer it, ``closing_weight`` for the other closing kinds, 1 for the rest."""
    expected = set(gate.expected_user_nodes(task, gate.last_action(history)))
    closing = set(closing_actions(task))
    return {node: settings.expected_weight if node in expected
            else settings.closing_weight if task.sam_graph.get(node) in closing else 1.0
            for node in task.user_nodes}


def score_actions(task: TaskSchema, history: Sequence[Event], probabilities: dict[str, float],
                  settings: StarSettings = DEFAULT_SETTINGS) -> dict[str, float]:
    """Weight of each action after a customer message: P(kind) x prior (:func:`kind_weights`), summed
    over kinds that lead to it."""
    weights = kind_weights(task, history, settings)
    scores: dict[str, float] = {}
    for node, p in probabilities.items():
        action = task.sam_graph.get(node)
        if action is None:
            continue
        scores[action] = scores.get(action, 0.0) + p * weights.get(node, 1.0)
    return scores


def strongest_kind(task: TaskSchema, history: Sequence[Event], probabilities: dict[str, float], action: str,
                   settings: StarSettings = DEFAULT_SETTINGS) -> str:
    """The kind of message that gives ``action`` most of its weight in :func:`score_actions`."""
    weights = kind_weights(task, history, settings)
    leading = [node for node in probabilities if task.sam_graph.get(node) == action]
    return max(leading, key=lambda node: probabilities[node] * weights.get(node, 1.0))


def two_kinds(task: TaskSchema, first: str, second: str) -> type[OneOf]:
    """A :class:`OneOf` between two kinds of customer message, for :data:`CLOSER_QUESTION`."""
    return type("CloserKind", (OneOf,), {"__doc__": "The closer of two kinds of the customer's latest message.",
                                         "__module__": __name__,
                                         "options": {first: _kind_text(task, first), second: _kind_text(task, second)}})


def is_close_call(ranked: Sequence[str], scores: dict[str, float], ratio: float | None) -> bool:
    """Whether the two best actions ``ranked`` by ``scores`` are within ``ratio`` of each other."""
    return ratio is not None and len(ranked) >= 2 and scores[ranked[1]] >= ratio * scores[ranked[0]]


def settle_close_call(task: TaskSchema, history: Sequence[Event], probabilities: dict[str, float],
                      ranked: list[str], scores: dict[str, float], read: Callable[[str, type[OneOf]], OneOf],
                      settings: StarSettings = DEFAULT_SETTINGS) -> str:
    """The better of the two best actions ``ranked`` by ``scores``: the first, unless they are a close
    call and the model, asked which of the two kinds behind them the message is closer to (``read``),
    gives the second kind more than ``settings.second_kind_above``."""
    first, second = ranked[0], ranked[1]
    if not is_close_call(ranked, scores, settings.close_call_ratio):
        return first
    kind_first = strongest_kind(task, history, probabilities, first, settings)
    kind_second = strongest_kind(task, history, probabilities, second, settings)
    reading = read(CLOSER_QUESTION, two_kinds(task, kind_first, kind_second))
    return second if reading.probabilities.get(kind_second, 0.0) > settings.second_kind_above else first


def next_action(task: TaskSchema, history: Sequence[Event], label: str | None,
                probabilities: dict[str, float], allowed: list[str],
                read: Callable[[str, type[OneOf]], OneOf] | None = None,
                settings: StarSettings = DEFAULT_SETTINGS) -> str:
    """The procedure: the next agent action from the graph, the dialogue so far and the message kind.

    After a knowledge-base result, the result node it matches decides. After a customer message, the
    action with the most weight (:func:`score_actions`) that the gate allows; with ``read``
    (``turn.read``), a close call between the two best is settled by a second, two-way reading
    (:func:`settle_close_call`). A question the message already answers is skipped
    (:func:`skip_answered`).
    """
    previous = gate.last_action(history)
    kind = gate.last_kind(history)
    choice: str | None = None
    if kind == "backend":
        node = gate.result_node(task, history[-1].item)
        if node is not None:
            choice = task.sam_graph.get(node)
        else:
            choice = next(iter(gate.nothing_found_actions(task)), None)
    elif previous is None and "hello" in allowed and not probabilities:
        choice = "hello"
    elif probabilities:
        scores = score_actions(task, history, probabilities, settings)
        ranked = sorted((a for a in scores if a in allowed), key=lambda a: -scores[a])
        choice = ranked[0] if ranked else None
        if read is not None and kind == "customer" and is_close_call(ranked, scores, settings.close_call_ratio):
            choice = settle_close_call(task, history, probabilities, ranked, scores, read, settings)
    if choice is None and previous is not None:
        choice = task.graph.get(previous)
    if choice not in allowed:
        choice = "anything_else" if "anything_else" in allowed else allowed[0]
    if kind == "customer":
        choice = skip_answered(task, history, choice, label, probabilities, allowed, settings)
    return choice


def skip_answered(task: TaskSchema, history: Sequence[Event], action: str, label: str | None,
                  probabilities: dict[str, float], allowed: list[str],
                  settings: StarSettings = DEFAULT_SETTINGS) -> str:
    """Do not ask what is already known: while ``action`` is a question that the customer's message
    answers too (by the model's reading, ``settings.answered_threshold``) or that was asked before in
    this dialogue, go on to the action after its answer (:func:`after_answer`)."""
    done = set(gate.actions_so_far(history))
    seen: set[str] = set()
    while is_question(task, action) and action not in seen:
        seen.add(action)
        answers = answering_kinds(task, action)
        given = label not in answers and sum(probabilities.get(u, 0.0) for u in answers) >= settings.answered_threshold
        following = after_answer(task, action)
        if not (given or action in done) or following not in allowed:
            break
        action = following
    return action


def answering_kinds(task: TaskSchema, action: str) -> list[str]:
    """The kinds of customer message that answer ``action`` (SAM's ``user_*inform*`` nodes whose
    r_graph points at it)."""
    return [u for u in task.user_nodes if task.sam_r_graph.get(u) == action and "inform" in u]


def after_answer(task: TaskSchema, action: str) -> str | None:
    """The agent's next action once the customer has answered ``action``.

    SAM's flowchart says it directly: the action after the kind of message that answers ``action``,
    where exactly one action follows. STAR's own graph lists the questions in another order in some
    tasks and puts informational replies between them, so it decides only where SAM's gives no
    single answer.
    """
    answers = answering_kinds(task, action)
    following = {task.sam_graph[u] for u in answers if u in task.sam_graph}
    if len(following) == 1:
        return following.pop()
    return task.graph.get(action)


def asks_customer(task: TaskSchema, action: str) -> bool:
    """An action that asks the customer for a fact: a task question, or the generic ``ask_name``."""
    return action == "ask_name" or is_question(task, action)


def is_given(answer: str | None) -> TypeGuard[str]:
    """Whether a :class:`GivenAnswer` holds a value (the model writes null in several ways)."""
    return answer is not None and answer.strip().strip(".").lower() not in NOT_GIVEN


def skip_given(task: TaskSchema, action: str, allowed: list[str],
               read: Callable[[str, type[GivenAnswer]], GivenAnswer], given: dict[str, str]) -> str:
    """Do not ask what the customer already said: while ``action`` asks for a fact and the model
    finds the customer's answer in the conversation (``read``, asked :data:`GIVEN_QUESTION`), go on
    to the action after its answer (:func:`after_answer`).

    ``given`` (action -> answer) remembers the answers found earlier in this conversation: a fact
    the customer gave stays given, so it is not read again (added to as answers are found).
    """
    seen: set[str] = set()
    while asks_customer(task, action) and action not in seen:
        seen.add(action)
        following = after_answer(task, action)
        if following is None or following not in allowed:
            break
        if action not in given:
            answer = read(GIVEN_QUESTION.format(question=task.text(action)), GivenAnswer).answer
            if not is_given(answer):
                break
            given[action] = answer
        action = following
    return action


def is_question(task: TaskSchema, action: str) -> bool:
    """An action that asks the customer for information: a kind of customer message informs it
    (SAM's r_graph) and the flowchart goes on after it. Greetings and generic actions excluded."""
    if action in gate.GENERIC_ACTIONS or action in QUERY_LABELS or action not in task.graph:
        return False
    return bool(answering_kinds(task, action))


class Reader(Protocol):
    """A follow-up reading (``turn.read``): ``schema`` read from the conversation, asked ``question``."""

    def __call__(self, question: str, schema: type[R]) -> R: ...


def choose_action(task: TaskSchema, history: Sequence[Event], label: str | None, probabilities: dict[str, float],
                  allowed: list[str], read: Reader, given: dict[str, str],
                  settings: StarSettings = DEFAULT_SETTINGS) -> str:
    """The harness's next action: :func:`next_action` (close calls read again through ``read``), then,
    after a customer message and with ``settings.read_given``, past the questions whose answer the
    conversation holds (:func:`skip_given`, remembering answers in ``given``)."""
    action = next_action(task, history, label, probabilities, allowed, read=read, settings=settings)
    if settings.read_given and gate.last_kind(history) == "customer":
        action = skip_given(task, action, allowed, read, given)
    return action


def message_type(task: TaskSchema) -> type[OneOf]:
    """The step reading's facts: one of SAM's kinds of customer message (:func:`message_kinds`), told
    with its question in the policy's system text."""
    return type(f"{task.name.title().replace('_', '')}Message", (OneOf,), {
        "__doc__": f"The kind of the customer's latest message in STAR task {task.name}.",
        "__module__": __name__,
        "options": message_kinds(task), "in_policy_text": True, "question": KIND_QUESTION})


def policy_description(task: TaskSchema) -> str:
    """The policy description of a task: what it is, then its kinds of customer message (lettered)."""
    return (f"the STAR task '{task.name.replace('_', ' ')}'. Customers write messages of these kinds:\n"
            + message_type(task).system_instructions())


def message_reading(facts: Any) -> tuple[str | None, dict[str, float]]:
    """The label and every kind's probability of a step's message reading (a label alone counts 1)."""
    label = getattr(facts, "label", None)
    probabilities = dict(getattr(facts, "probabilities", {}) or {})
    if label and not probabilities:
        probabilities = {label: 1.0}
    return label, probabilities


def build_policy(task: TaskSchema, folder: Path, settings: StarSettings = DEFAULT_SETTINGS) -> Policy:
    """The sopagent policy of a STAR task under ``settings``; its catalog file is written into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    catalog_path = (folder / f"star_{task.name}.yaml").resolve()
    catalog_path.write_text(catalog_yaml(task), encoding="utf-8")
    message = message_type(task)
    fallback = "out_of_scope" if "out_of_scope" in task.actions else task.actions[0]
    policy = Policy(name=f"star_{task.name}", version="star-1", catalog=catalog_path, start="start",
                    fallback=fallback, description=policy_description(task), tools=RecordedDialogue)

    def decide(turn: Turn[Any, RecordedDialogue]) -> list[Option]:
        history = turn.tools.history
        allowed = gate.allowed_actions(task, history)
        label, probabilities = message_reading(turn.facts)
        action = choose_action(task, history, label, probabilities, allowed, turn.read,
                               turn.known.setdefault(KNOWN_GIVEN, {}), settings)
        turn.known[KNOWN_ALLOWED] = allowed
        return [say(action, next=step_name(action))]

    for action in [None, *task.actions]:
        if message.options:
            policy.step(facts=message, name=step_name(action))(decide)
        else:
            policy.step(name=step_name(action))(decide)
    return policy
