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
(``star_allowed``); the chosen action is always one of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, TypeGuard

import yaml
from pydantic import Field

from sopagent.eval.star import gate
from sopagent.eval.star.data import QUERY_LABELS, Event, TaskSchema
from sopagent.policy import Facts, OneOf, Option, Policy, Turn, say

MAX_KINDS = 26
"""A choice is one letter, so at most 26 kinds of customer message are offered."""
EXPECTED_WEIGHT = 16.0
"""How much more likely a kind of message is when it answers our last action (the graph's prior)."""
CLOSING_WEIGHT = 1.0
"""How much more likely a closing kind of message (thanks, goodbye, nothing else: one that leads to
:func:`closing_actions`) is where it does not answer our last action: a customer may end the
conversation at any point. 1 (no change) keeps SAM's graph alone as the prior: 2, 4 and 8 cost
restaurant and doctor more than they gave bank and hotel (fourteenth session,
``benchmarks/star_prior_weights.py``, see BENCHMARKS.md)."""
KIND_QUESTION = "Which kind listed above is the customer's latest message?"
"""Told in the system text, after the kinds (``question_in_system``), so a reading evaluates only the
dialogue's new lines. The message itself is the dialogue's last line and is not repeated: that cut
the tokens a reading evaluates by about a quarter (p50 74 -> 54) and the reading's p50 latency from
1.69 to 1.27 s, with the same accuracy on a held-out sample (see BENCHMARKS.md)."""
ANSWERED_THRESHOLD = 0.2
"""A question counts as already answered when the model gives the kinds of message that answer it at
least this much probability (the message carries that fact too); below it, the follow-up reading
(:data:`GIVEN_QUESTION`) decides. 0.1 was chosen in the first sessions, before the follow-up reading
existed; message readings are flat (the top kind often has 0.13-0.3), so 0.1 skipped questions
whose answer the customer had not given (bank: a name, then the query, without account number and
PIN). Re-decided from recorded runs with benchmarks/star_answered_threshold.py (40 cases per domain):
sample offset 0 68.2 -> 70.7% (tuning), held-out offset 80 68.6 -> 71.4%, at about 45% more
follow-up readings (see BENCHMARKS.md)."""

CLOSE_CALL_RATIO = 0.6
"""After a customer message, a close call is two best actions whose weights (:func:`score_actions`)
are within this ratio; the model then reads the message once more, choosing between only the two
kinds of message behind them (:data:`CLOSER_QUESTION`). Chosen on two 280-case samples (see
BENCHMARKS.md); None in :func:`next_action` turns the second reading off."""
CLOSER_QUESTION = "Which of these two is closer to what the customer's latest message means?"
"""The close-call reading's question; the two kinds follow it, lettered, in the order of their weight."""


GIVEN_QUESTION = ("Fill in the customer's answer to \"{question}\" using only what the customer wrote above. "
                  "Use null if the customer never said it. JSON: {{\"answer\": ...}}")
"""Asked before the agent asks the customer something: has the customer already said it? Worded to
have the model copy the value; "has the customer already given this?" was answered null almost
always (an answer in 10 of 122 checks on the first two samples, +0.5 points) and a yes/no reading had
no signal (see BENCHMARKS.md). The instructions stay after the question: moved into the readings'
system text (only the question after the conversation) the model invented answers ("John Doe",
"1234567890") in a third of the first sample's bank cases (see BENCHMARKS.md). 46 tokens with its
chat-template ending, against 71 for :data:`LONGER_GIVEN_QUESTION`, with the same or better accuracy
on four samples (``benchmarks/star_question_wording.py``); shorter still ("What did the customer
answer to ...? Copy it ...; null if never said.") lost 5 points."""
LONGER_GIVEN_QUESTION = ("Fill in the customer's answer to the question \"{question}\" using only what the "
                         "customer wrote in the conversation above (a name, a date, a number, a place...). Use "
                         "null only if the customer never said it. Reply as JSON: {{\"answer\": ...}}")
"""The follow-up question's wording from the fifth to the eighth session, kept to measure against."""
KNOWN_GIVEN = "star_given"
"""Key of the conversation's known facts that holds the answers already found (action -> answer)."""
NOT_GIVEN = frozenset({"", "null", "none", "n/a", "no", "unknown"})
"""Answers that mean the customer has not said it."""
ANSWER_GROUNDING: float | None = None
"""With a share set, an answer found by the follow-up reading counts as given only when at least that
share of its words are words the customer wrote (:func:`grounded_share`): the reading is asked to
use "only what the customer wrote", and code would check it. None (kept): any answer counts.
Measured in the sixth session on its rows and again in the fifteenth
(``benchmarks/star_grounded_answers.py``): 0.5 lifted trivia but cost hotel and restaurant more (all
5,580 cases 68.7 -> 67.4, held out 68.4 -> 67.1)."""
REJECT_ECHO = False
"""On, an answer that repeats the agent's own question (:data:`ECHO_SHARE` of its words are the
question's) and is mostly not the customer's words does not count ("At what question would you like
to start?" read as its own answer). Off (kept): measured in the fifteenth session, trivia 74.8 ->
77.6 but hotel 57.3 -> 54.7 and restaurant 61.5 -> 57.9 (held out 68.4 -> 67.7)."""
ECHO_SHARE = 0.8
"""The share of an answer's words that must be the agent's question's for :data:`REJECT_ECHO`."""
WORD = re.compile(r"[^\W_]+")
"""A word, for comparing an answer with what the customer wrote (letters and digits, any script)."""
SECOND_KIND_ABOVE = 0.5
"""A close call goes to the second kind only when the two-way reading gives it more than this. The
model leans to the first option (A); swept 0.3-0.6 in the fifteenth session on the tuning samples
(0.45: 69.6, 0.5: 71.2, 0.55: 70.7), 0.5 kept."""


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


def kind_weights(task: TaskSchema, history: Sequence[Event], expected_weight: float = EXPECTED_WEIGHT,
                 closing_weight: float = CLOSING_WEIGHT) -> dict[str, float]:
    """The graph's prior on each kind of customer message after our last action: ``expected_weight``
    for the kinds that answer it, ``closing_weight`` for the other closing kinds, 1 for the rest."""
    expected = set(gate.expected_user_nodes(task, gate.last_action(history)))
    closing = set(closing_actions(task))
    return {node: expected_weight if node in expected
            else closing_weight if task.sam_graph.get(node) in closing else 1.0
            for node in task.user_nodes}


def score_actions(task: TaskSchema, history: Sequence[Event], probabilities: dict[str, float],
                  expected_weight: float = EXPECTED_WEIGHT, closing_weight: float = CLOSING_WEIGHT) -> dict[str, float]:
    """Weight of each action after a customer message: P(kind) x prior (:func:`kind_weights`), summed
    over kinds that lead to it."""
    weights = kind_weights(task, history, expected_weight, closing_weight)
    scores: dict[str, float] = {}
    for node, p in probabilities.items():
        action = task.sam_graph.get(node)
        if action is None:
            continue
        scores[action] = scores.get(action, 0.0) + p * weights.get(node, 1.0)
    return scores


def strongest_kind(task: TaskSchema, history: Sequence[Event], probabilities: dict[str, float], action: str,
                   expected_weight: float = EXPECTED_WEIGHT, closing_weight: float = CLOSING_WEIGHT) -> str:
    """The kind of message that gives ``action`` most of its weight in :func:`score_actions`."""
    weights = kind_weights(task, history, expected_weight, closing_weight)
    leading = [node for node in probabilities if task.sam_graph.get(node) == action]
    return max(leading, key=lambda node: probabilities[node] * weights.get(node, 1.0))


def two_kinds(task: TaskSchema, first: str, second: str, name: str = "CloserKind") -> type[OneOf]:
    """A :class:`OneOf` between two kinds of customer message, for :data:`CLOSER_QUESTION`; ``name``
    tells the readings of :func:`settle_close_call` and :func:`settle_closing` apart in the record."""
    return type(name, (OneOf,), {"__doc__": "The closer of two kinds of the customer's latest message.",
                                 "__module__": __name__,
                                 "options": {first: _kind_text(task, first), second: _kind_text(task, second)}})


def leading_kinds(task: TaskSchema, action: str) -> list[str]:
    """The kinds of customer message after which SAM's flowchart takes ``action``."""
    return [u for u in task.user_nodes if task.sam_graph.get(u) == action]


def is_close_call(ranked: Sequence[str], scores: dict[str, float], ratio: float) -> bool:
    """Whether the two best actions ``ranked`` by ``scores`` are within ``ratio`` of each other."""
    return len(ranked) >= 2 and scores[ranked[1]] >= ratio * scores[ranked[0]]


def closing_kinds(task: TaskSchema, action: str, allowed: Sequence[str]) -> list[str]:
    """The kinds of customer message that answer ``action`` and lead on to another allowed action:
    for the generic "anything else?", SAM's ``user_*goodbye``/``user_*nothing_else`` (then goodbye)."""
    return [u for u in task.user_nodes if task.sam_r_graph.get(u) == action
            and task.sam_graph.get(u) not in (None, action) and task.sam_graph.get(u) in allowed]


def settle_closing(task: TaskSchema, probabilities: dict[str, float], action: str, allowed: Sequence[str],
                   read: Callable[[str, type[OneOf]], OneOf]) -> str:
    """Do not ask "anything else?" of a customer who has just said there is nothing else.

    In SAM's flowchart a thank-you leads to ``anything_else`` and the answer "nothing else" to the
    farewell; customers often say both at once ("thanks, that's all I needed"), which a reading among
    all kinds of message rarely shows (it spreads its probability over many). Where ``action`` is
    ``anything_else`` and a kind of message answers it, the model reads the message once more between
    the kind that led here (A) and the closing kind (B), as in :func:`settle_close_call`; B's action
    is taken only above one half.
    """
    if action != "anything_else":
        return action
    closing = closing_kinds(task, action, allowed)
    leading = leading_kinds(task, action)
    if not closing or not leading:
        return action
    kind_here = max(leading, key=lambda u: probabilities.get(u, 0.0))
    kind_closing = max(closing, key=lambda u: probabilities.get(u, 0.0))
    reading = read(CLOSER_QUESTION, two_kinds(task, kind_here, kind_closing, name="ClosingKind"))
    return task.sam_graph[kind_closing] if reading.probabilities.get(kind_closing, 0.0) > 0.5 else action


def settle_close_call(task: TaskSchema, history: Sequence[Event], probabilities: dict[str, float],
                      ranked: list[str], scores: dict[str, float], read: Callable[[str, type[OneOf]], OneOf],
                      ratio: float = CLOSE_CALL_RATIO, expected_weight: float = EXPECTED_WEIGHT,
                      closing_weight: float = CLOSING_WEIGHT, question: str = CLOSER_QUESTION,
                      second_above: float = SECOND_KIND_ABOVE) -> str:
    """The better of the two best actions ``ranked`` by ``scores``: the first, unless they are a close
    call (within ``ratio``) and the model, asked which of the two kinds behind them the message is
    closer to (``read``, asked ``question``), gives the second kind more than ``second_above``."""
    first, second = ranked[0], ranked[1]
    if not is_close_call(ranked, scores, ratio):
        return first
    kind_first = strongest_kind(task, history, probabilities, first, expected_weight, closing_weight)
    kind_second = strongest_kind(task, history, probabilities, second, expected_weight, closing_weight)
    reading = read(question, two_kinds(task, kind_first, kind_second))
    return second if reading.probabilities.get(kind_second, 0.0) > second_above else first


def next_action(task: TaskSchema, history: Sequence[Event], label: str | None,
                probabilities: dict[str, float], allowed: list[str],
                expected_weight: float = EXPECTED_WEIGHT, greet_first: bool = False,
                answered_threshold: float = ANSWERED_THRESHOLD, sam_order: bool = True,
                read: Callable[[str, type[OneOf]], OneOf] | None = None,
                close_call_ratio: float | None = CLOSE_CALL_RATIO, read_closing: bool = False,
                closing_weight: float = CLOSING_WEIGHT, close_call_question: str = CLOSER_QUESTION,
                second_above: float = SECOND_KIND_ABOVE) -> str:
    """The procedure: the next agent action from the graph, the dialogue so far and the message kind.

    ``read`` (``turn.read``), with ``close_call_ratio`` set, settles a close call between the two
    best actions after a customer message with a second, two-way reading (:func:`settle_close_call`);
    with ``read_closing``, where no close call was read, it also checks that a customer about to be
    asked "anything else?" has not just said there is nothing else (:func:`settle_closing`). That is
    off: measured in the twelfth session, the two-way reading gave the closing kind 0.37-0.39 in every
    case, whatever the customer wrote, and changed no prediction (see BENCHMARKS.md).
    ``expected_weight`` and ``closing_weight`` set the graph's prior on the kinds (:func:`kind_weights`);
    ``close_call_question`` and ``second_above`` are the close-call reading's wording and bar.
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
    elif previous is None and "hello" in allowed and (greet_first or not probabilities):
        choice = "hello"
    elif probabilities:
        scores = score_actions(task, history, probabilities, expected_weight, closing_weight)
        ranked = sorted((a for a in scores if a in allowed), key=lambda a: -scores[a])
        choice = ranked[0] if ranked else None
        if read is not None and close_call_ratio is not None and kind == "customer" \
                and is_close_call(ranked, scores, close_call_ratio):
            choice = settle_close_call(task, history, probabilities, ranked, scores, read, close_call_ratio,
                                       expected_weight, closing_weight, close_call_question, second_above)
        elif read is not None and read_closing and kind == "customer" and choice is not None:
            choice = settle_closing(task, probabilities, choice, allowed, read)
    if choice is None and previous is not None:
        choice = task.graph.get(previous)
    if choice not in allowed:
        choice = "anything_else" if "anything_else" in allowed else allowed[0]
    if kind == "customer":
        choice = skip_answered(task, history, choice, label, probabilities, allowed, answered_threshold, sam_order)
    return choice


def skip_answered(task: TaskSchema, history: Sequence[Event], action: str, label: str | None,
                  probabilities: dict[str, float], allowed: list[str],
                  threshold: float = ANSWERED_THRESHOLD, sam_order: bool = True) -> str:
    """Do not ask what is already known: while ``action`` is a question that the customer's message
    answers too (by the model's reading) or that was asked before in this dialogue, go on to the
    action after its answer (:func:`after_answer`)."""
    done = set(gate.actions_so_far(history))
    seen: set[str] = set()
    while is_question(task, action) and action not in seen:
        seen.add(action)
        answers = answering_kinds(task, action)
        given = label not in answers and sum(probabilities.get(u, 0.0) for u in answers) >= threshold
        following = after_answer(task, action, sam_order)
        if not (given or action in done) or following not in allowed:
            break
        action = following
    return action


def answering_kinds(task: TaskSchema, action: str) -> list[str]:
    """The kinds of customer message that answer ``action`` (SAM's ``user_*inform*`` nodes whose
    r_graph points at it)."""
    return [u for u in task.user_nodes if task.sam_r_graph.get(u) == action and "inform" in u]


def after_answer(task: TaskSchema, action: str, sam_order: bool = True) -> str | None:
    """The agent's next action once the customer has answered ``action``.

    SAM's flowchart says it directly: the action after the kind of message that answers ``action``
    (where exactly one action follows). STAR's own graph lists the questions in another order in
    some tasks and puts informational replies between them (ride_book: destination, departure, then
    "I can also filter for ...", which the wizards rarely sent; SAM: departure, destination, then
    the query). STAR's graph decides where SAM's gives no single answer, or with ``sam_order`` off
    (kept to measure the two side by side in ``benchmarks/star_answer_order.py``).
    """
    if sam_order:
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


def customer_words(history: Sequence[Event]) -> set[str]:
    """The words of every customer message in ``history``, lower-cased."""
    return {w for e in history if e.role == "customer" for w in WORD.findall((e.text or "").lower())}


def grounded_share(answer: str, words: set[str]) -> float:
    """The share of ``answer``'s words that are in ``words`` (1 for an answer without words)."""
    found = WORD.findall(answer.lower())
    return sum(w in words for w in found) / len(found) if found else 1.0


def answer_stands(answer: str | None, agent_question: str, history: Sequence[Event],
                  grounding: float | None = ANSWER_GROUNDING, reject_echo: bool = REJECT_ECHO) -> TypeGuard[str]:
    """Whether a follow-up reading's ``answer`` to ``agent_question`` counts as given: a value
    (:func:`is_given`) that passes the checks switched on (:data:`ANSWER_GROUNDING`,
    :data:`REJECT_ECHO`) against the customer's messages in ``history``."""
    if not is_given(answer):
        return False
    if grounding is None and not reject_echo:
        return True
    own = grounded_share(answer, customer_words(history))
    if grounding is not None and own < grounding:
        return False
    if reject_echo and own < 0.5:  # mostly not the customer's words: an echo of the question does not count
        return grounded_share(answer, set(WORD.findall(agent_question.lower()))) < ECHO_SHARE
    return True


def skip_given(task: TaskSchema, action: str, allowed: list[str],
               read: Callable[[str, type[GivenAnswer]], GivenAnswer], given: dict[str, str],
               question: str = GIVEN_QUESTION, sam_order: bool = True,
               history: Sequence[Event] = (), grounding: float | None = ANSWER_GROUNDING,
               reject_echo: bool = REJECT_ECHO) -> str:
    """Do not ask what the customer already said: while ``action`` asks for a fact and the model
    finds the customer's answer in the conversation (``read``), go on to the action after its answer
    (:func:`after_answer`).

    ``given`` (action -> answer) remembers the answers found earlier in this conversation: a fact
    the customer gave stays given, so it is not read again (added to as answers are found).
    ``question`` is the reading's wording, with ``{question}`` for the text the agent would send.
    An answer counts only where :func:`answer_stands` (``grounding``, ``reject_echo``, checked
    against the customer's messages in ``history``).
    """
    seen: set[str] = set()
    while asks_customer(task, action) and action not in seen:
        seen.add(action)
        following = after_answer(task, action, sam_order)
        if following is None or following not in allowed:
            break
        if action not in given:
            asked = task.text(action)
            answer = read(question.format(question=asked), GivenAnswer).answer
            if not answer_stands(answer, asked, history, grounding, reject_echo):
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


def candidates(task: TaskSchema, history: Sequence[Event], action: str, allowed: list[str]) -> list[str]:
    """Where the procedure leaves a real choice: a question whose answer the customer may already have
    given (then the flowchart's next action). Otherwise just ``action``."""
    if gate.last_kind(history) != "customer" or not is_question(task, action):
        return [action]
    following = task.graph.get(action)
    if following is None or following not in allowed or following == action:
        return [action]
    return [action, following]


def message_type(task: TaskSchema, question_in_system: bool = True) -> type[OneOf]:
    """The step reading's facts: one of SAM's kinds of customer message (:func:`message_kinds`)."""
    return type(f"{task.name.title().replace('_', '')}Message", (OneOf,), {
        "__doc__": f"The kind of the customer's latest message in STAR task {task.name}.",
        "__module__": __name__,
        "options": message_kinds(task), "listed_in_system": True, "question_in_system": question_in_system,
        "question": KIND_QUESTION})


def policy_description(task: TaskSchema, question_in_system: bool = True) -> str:
    """The policy description of a task: what it is, then its kinds of customer message (lettered)."""
    return (f"the STAR task '{task.name.replace('_', ' ')}'. Customers write messages of these kinds:\n"
            + message_type(task, question_in_system).system_instructions())


def build_policy(task: TaskSchema, folder: Path, ask_known: bool = False, read_given: bool = True,
                 question_in_system: bool = True, settle_close_calls: bool = True,
                 close_calls_under_policy_text: bool = False) -> Policy:
    """The sopagent policy of a STAR task; its catalog file is written into ``folder``.

    ``question_in_system``: the message reading's question is told in the system text, after the
    kinds of message, and nothing follows the dialogue (off: asked after the dialogue, as before the
    seventh session; kept to measure the two side by side in ``benchmarks/star_question_place.py``).

    ``settle_close_calls``: where the two best actions after a customer message are a close call,
    read the message once more between the two kinds of message behind them (:func:`settle_close_call`);
    ``close_calls_under_policy_text``: ask that reading right after the step's own reading, under the
    policy's system text (``turn.read(..., under_policy_text=True)``), so only its question is new to
    llama.cpp's cache. Off: measured in the thirteenth session on 560 cases, it cost 3.6 points
    (71.6 -> 68.0; trivia 81.2 -> 65.0), so the reading stays under the readings' own system text on
    the reading lane (``benchmarks/star_close_call_place.py``, see BENCHMARKS.md).

    ``read_given``: before asking the customer for a fact, ask the model whether the conversation
    already holds the answer (:func:`skip_given`, one short JSON reading per question).

    ``ask_known`` lets the model choose between asking a question and going on along the flowchart
    (two replies, one token). Measured worse than the code-only rule on the fixed sample (the model
    mostly picks the second option), so it is off; see BENCHMARKS.md.
    """
    folder.mkdir(parents=True, exist_ok=True)
    catalog_path = (folder / f"star_{task.name}.yaml").resolve()
    catalog_path.write_text(catalog_yaml(task), encoding="utf-8")
    Message = message_type(task, question_in_system)
    description = policy_description(task, question_in_system)
    fallback = "out_of_scope" if "out_of_scope" in task.actions else task.actions[0]
    policy = Policy(name=f"star_{task.name}", version="star-1", catalog=catalog_path, start="start",
                    fallback=fallback, description=description, tools=RecordedDialogue)
    facts_type = Message if Message.options else None

    def close_call_reader(turn: Turn[Any, RecordedDialogue]) -> Callable[[str, type[OneOf]], OneOf] | None:
        if not settle_close_calls:
            return None
        if close_calls_under_policy_text:
            return lambda question, schema: turn.read(question, schema, under_policy_text=True)
        return turn.read

    def decide(turn: Turn[Any, RecordedDialogue]) -> list[Option]:
        history = turn.tools.history
        allowed = gate.allowed_actions(task, history)
        facts = turn.facts
        label = getattr(facts, "label", None)
        probabilities = dict(getattr(facts, "probabilities", {}) or {})
        if label and not probabilities:
            probabilities = {label: 1.0}
        action = next_action(task, history, label, probabilities, allowed,
                             read=close_call_reader(turn))
        if read_given and gate.last_kind(history) == "customer":
            given = turn.known.setdefault(KNOWN_GIVEN, {})
            action = skip_given(task, action, allowed, turn.read, given, history=history)
        turn.known["star_allowed"] = allowed
        if not ask_known:
            return [say(action, next=step_name(action))]
        choice = candidates(task, history, action, allowed)
        if len(choice) == 1:
            return [say(action, next=step_name(action))]
        return [say(choice[0], next=step_name(choice[0]),
                    hint="ask this only if the customer has not already given it"),
                say(choice[1], next=step_name(choice[1]),
                    hint="if the customer already gave what the previous reply would ask for")]

    for action in [None, *task.actions]:
        if facts_type is not None:
            policy.step(facts=facts_type, name=step_name(action))(decide)
        else:
            policy.step(name=step_name(action))(decide)
    return policy
