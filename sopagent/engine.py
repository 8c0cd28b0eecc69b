"""The Agent: one customer turn, exactly as DESIGN.md draws it.

    1 load conversation state                       store
    2 extract the facts the current step declares    model (typed + constrained)
    3 run the step: it returns the allowed options   policy code, no model
    4 one option: take it; several: model picks one  model (choice-constrained)
    5 gate: requires_approval or low confidence      -> pending
    6 render the catalog template                    catalog
    7 append the decision and new state, one txn     store
    8 return the reply

The engine knows nothing about HTTP or terminals.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Sequence

from pydantic import BaseModel

from sopagent import prompts
from sopagent.errors import ConstraintViolationError, ConversationError, ModelError, PolicyError
from sopagent.models.base import CallStats, ChatPrompt, DecisionModel
from sopagent.policy import END, FOLLOW_UP_READINGS, NoFacts, OneOf, Option, Policy, Turn
from sopagent.store import Conversation, Decision, Store, utcnow

HOLDING_STEP = "awaiting_approval"
OPERATOR_HOLDS = ("paused", "taken_over")
"""Conversation states in which the agent records the customer's message but does not answer."""


@dataclass(frozen=True)
class OptionView:
    """An allowed option as recorded and shown: response id, bound slots, next step, probability."""

    response_id: str
    next_step: str
    slots: dict[str, Any]
    probability: float | None


@dataclass
class TurnResult:
    """What :meth:`Agent.respond` returns: the reply and the decision behind it."""

    conversation_id: str
    decision_id: int
    reply: str | None
    """What the customer receives now (None only when a pending reply has no holding response)."""
    response_id: str | None
    """The chosen catalog response (for a pending decision: the one waiting for approval)."""
    status: str
    step: str
    next_step: str
    facts: dict[str, Any]
    options: list[OptionView]
    chosen_index: int | None
    chosen_by: str
    confidence: float | None
    latency_ms: dict[str, float]
    error: str | None = None
    ended: bool = False

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the ``--jsonl`` line)."""
        return {
            "conversation_id": self.conversation_id, "decision_id": self.decision_id, "reply": self.reply,
            "response_id": self.response_id, "status": self.status, "step": self.step,
            "next_step": self.next_step, "facts": self.facts,
            "options": [{"id": o.response_id, "probability": o.probability, "next": o.next_step,
                         "slots": o.slots} for o in self.options],
            "chosen_index": self.chosen_index, "chosen_by": self.chosen_by, "confidence": self.confidence,
            "latency_ms": self.latency_ms, "error": self.error, "ended": self.ended,
        }


@dataclass
class _Outcome:
    options: list[Option] = field(default_factory=list)
    probabilities: list[float | None] = field(default_factory=list)
    chosen_index: int | None = None
    chosen_by: str = "policy"
    error: str | None = None
    readings: list[dict[str, Any]] = field(default_factory=list)


def facts_prompt(system: str, context: str, schema: type[BaseModel], text: str) -> ChatPrompt:
    """How the model is asked for a step's facts: one lettered label for a :class:`OneOf`, else JSON."""
    if issubclass(schema, OneOf):
        in_system = schema.listed_in_system or schema.question_in_system
        texts = None if in_system else list(schema.options.values())
        question = "" if schema.question_in_system else schema.question.replace("{message}", text)
        return prompts.classification_prompt(system, context, question, texts)
    return prompts.extraction_prompt(system, context, schema)


def read_constrained(model: DecisionModel, prompt: ChatPrompt, schema: type[BaseModel]) -> tuple[BaseModel, CallStats]:
    """``schema`` read by ``model`` from ``prompt``, and the call's stats: JSON constrained to the
    schema, or for a :class:`OneOf` one constrained token, with every label's probability."""
    if not issubclass(schema, OneOf):
        extraction = model.extract(prompt, schema)
        return extraction.facts, extraction.stats
    labels = list(schema.options)
    choice = model.choose(prompt, len(labels))
    if not 0 <= choice.index < len(labels):  # checked again after decoding
        raise ConstraintViolationError(f"model chose label {choice.index} of {len(labels)}")
    probabilities = dict(zip(labels, choice.probabilities)) if choice.probabilities else {}
    return schema(label=labels[choice.index], probabilities=probabilities), choice.stats


def read_facts(model: DecisionModel, prompt: ChatPrompt, schema: type[BaseModel]) -> tuple[BaseModel, float]:
    """A step's facts read by ``model`` from :func:`facts_prompt`'s prompt, and the ms it waited for a
    shared model (:func:`read_constrained`)."""
    facts, stats = read_constrained(model, prompt, schema)
    return facts, stats.queued_ms


def read_follow_up(model: DecisionModel, context: str, question: str, schema: type[BaseModel],
                   system: str = prompts.READING_SYSTEM) -> tuple[BaseModel, CallStats]:
    """A step's follow-up reading (:meth:`sopagent.policy.Turn.read`) and the model call's stats:
    ``question`` about the conversation ``context`` under ``system``, answered as JSON constrained to
    ``schema``, or for a :class:`OneOf` as one lettered label with every label's probability
    (:func:`read_constrained`)."""
    if issubclass(schema, OneOf):
        prompt = prompts.reading_choice_prompt(context, question, list(schema.options.values()), system)
    else:
        prompt = prompts.reading_prompt(context, question, system)
    return read_constrained(model, prompt, schema)


class Agent:
    """Runs a policy on a model and records every turn in the audit store."""

    def __init__(self, policy: Policy, model: DecisionModel, store: Store, tools: Any = None,
                 confidence_threshold: float | None = None,
                 approve_when_confidence_unknown: bool | None = None) -> None:
        """
        Args:
            policy: the SOP (see :func:`sopagent.load_policy`).
            model: a constrained model backend (llama.cpp, or ScriptedModel in tests).
            store: the audit store.
            tools: backend look-ups for the steps; defaults to the policy's own demo tools.
            confidence_threshold: model choices below this probability wait for an operator
                (defaults to the policy's setting).
            approve_when_confidence_unknown: model choices whose probability the backend could
                not report (no log-probabilities) wait for an operator (defaults to the policy's
                setting).
        """
        self.policy = policy
        self.model = model
        self.store = store
        self.tools = tools if tools is not None else policy.make_tools()
        self.confidence_threshold = (policy.confidence_threshold if confidence_threshold is None
                                     else confidence_threshold)
        self.approve_when_confidence_unknown = (policy.approve_when_confidence_unknown
                                                if approve_when_confidence_unknown is None
                                                else approve_when_confidence_unknown)
        catalog = policy.catalog
        self.policy_version = store.policy_version(
            policy.name, policy.version, policy.source_text, policy.source_sha256,
            catalog.source, catalog.sha256, policy.modules_json)
        self._policy_sha256 = store.policy_digest_of(self.policy_version)
        self._system = prompts.system_text(policy.description)

    # --- conversations -------------------------------------------------------------------------

    def start(self, customer_ref: str | None = None, metadata: dict[str, Any] | None = None) -> str:
        """Open a conversation at the policy's start step; return its id."""
        conversation = Conversation(
            id=str(uuid.uuid4()), policy_name=self.policy.name, policy_version_id=self.policy_version.id or 0,
            customer_ref=customer_ref, metadata_json=json.dumps(metadata or {}), step=self.policy.start)
        self.store.create_conversation(conversation)
        return conversation.id

    def respond(self, conversation_id: str, text: str) -> TurnResult:
        """Handle one customer message; return the reply only after its decision is committed."""
        clock = _Clock()
        conversation = self.store.get_conversation(conversation_id)
        if conversation.policy_name != self.policy.name:
            raise ConversationError(f"conversation {conversation_id} runs policy {conversation.policy_name!r}, "
                                    f"not {self.policy.name!r}")
        if conversation.status == "closed":
            raise ConversationError(f"conversation {conversation_id} is closed; start a new one")
        if not isinstance(text, str) or not text.strip():
            raise ConversationError("the customer message is empty")
        history = self._history(conversation_id)
        known: dict[str, Any] = json.loads(conversation.known_json)
        clock.lap("load")

        if conversation.status in OPERATOR_HOLDS:
            return self._record_only(conversation, text, clock)
        step_name = conversation.step
        facts: BaseModel = NoFacts()
        outcome = _Outcome()
        if conversation.status == "awaiting_approval":
            step_name = HOLDING_STEP
            outcome.options = [Option(self.policy.holding or self.policy.fallback, next=conversation.step)]
            outcome.probabilities = [1.0]
            outcome.chosen_index = 0
        else:
            context = prompts.conversation_text(history, text)
            try:
                facts, queued_ms = self._extract(step_name, context, text)
                clock.lap("extract", queued_ms)
                known.update({k: v for k, v in facts.model_dump(mode="json").items() if v is not None})
                outcome = self._decide(conversation, step_name, facts, known, context, clock)
            except (ModelError, PolicyError) as exc:
                outcome = self._fallback(step_name, exc)

        return self._commit(conversation, step_name, text, facts, known, outcome, clock)

    def replay(self, conversation_id: str, transcript: Sequence[tuple[str, str]], step: str,
               customer_text: str | None) -> TurnResult:
        """Decide the next reply after a recorded dialogue prefix (evaluation, replay of logged dialogues).

        The same extract / policy / choose / commit path as :meth:`respond`, with two differences:
        ``transcript`` (every line so far as (role, text): customer, agent and back-end lines) is
        shown to the model instead of the stored history, and ``step`` is the step the recorded
        dialogue is in. ``customer_text`` is the customer's message since the agent last acted, or
        None when the agent acts again without one (after a back-end result): then no facts are read.
        """
        clock = _Clock()
        conversation = self.store.get_conversation(conversation_id)
        if conversation.policy_name != self.policy.name:
            raise ConversationError(f"conversation {conversation_id} runs policy {conversation.policy_name!r}, "
                                    f"not {self.policy.name!r}")
        if step not in self.policy.steps:
            raise ConversationError(f"policy {self.policy.name!r} has no step {step!r}")
        known: dict[str, Any] = json.loads(conversation.known_json)
        clock.lap("load")
        context = prompts.transcript_text(transcript)
        facts: BaseModel = NoFacts()
        try:
            queued_ms = 0.0
            if customer_text is not None:
                facts, queued_ms = self._extract(step, context, customer_text)
            clock.lap("extract", queued_ms)
            known.update({k: v for k, v in facts.model_dump(mode="json").items() if v is not None})
            outcome = self._decide(conversation, step, facts, known, context, clock)
        except (ModelError, PolicyError) as exc:
            outcome = self._fallback(step, exc)
        return self._commit(conversation, step, customer_text or "", facts, known, outcome, clock)

    # --- stages --------------------------------------------------------------------------------

    def _extract(self, step_name: str, context: str, text: str = "") -> tuple[BaseModel, float]:
        """The step's facts, and the ms the call waited for a shared model."""
        schema = self.policy.steps[step_name].facts
        if not schema.model_fields:
            return schema(), 0.0
        return read_facts(self.model, facts_prompt(self._system, context, schema, text), schema)

    def _decide(self, conversation: Conversation, step_name: str, facts: BaseModel, known: dict[str, Any],
                context: str, clock: "_Clock") -> _Outcome:
        def reader(question: str, schema: type[BaseModel], under_policy_text: bool = False) -> BaseModel:
            if under_policy_text:  # after the step reading's own prompt: only the question is new to it
                return read_follow_up(self.model, context, question, schema, self._system)[0]
            return read_follow_up(self._reading_model(), context, question, schema)[0]

        turn: Turn[Any, Any] = Turn(facts=facts, known=known, tools=self.tools, step=step_name,
                                    conversation_id=conversation.id, reader=reader)
        options: list[Option] | None = None
        try:
            for guard in self.policy.guards:
                options = guard(turn)
                if options:
                    break
            if not options:
                options = self.policy.steps[step_name].function(turn)
        except (PolicyError, ModelError):
            raise
        except Exception as exc:  # a bug or a failing backend call in policy code
            raise PolicyError(f"step {step_name!r} raised {type(exc).__name__}: {exc}") from exc
        self.policy.validate_options(step_name, options)
        clock.lap("policy")  # follow-up readings (turn.read) included

        outcome = _Outcome(options=options, readings=turn.readings)
        if len(options) == 1:
            outcome.chosen_index, outcome.probabilities = 0, [1.0]
            return outcome
        catalog = self.policy.catalog
        texts = [catalog[o.response].description + (f" ({o.hint})" if o.hint else "") for o in options]
        choice = self.model.choose(prompts.choice_prompt(self._system, context, texts), len(options))
        clock.lap("choose", choice.stats.queued_ms)
        if not 0 <= choice.index < len(options):  # checked again after decoding
            raise ConstraintViolationError(f"model chose option {choice.index} of {len(options)}")
        outcome.chosen_index = choice.index
        outcome.chosen_by = "model"
        outcome.probabilities = list(choice.probabilities) or [None] * len(options)
        return outcome

    def _reading_model(self) -> DecisionModel:
        """The model for follow-up readings: the backend's own reading lane where it has one (a second
        llama.cpp context keeps their prompt prefix apart), else the agent's model."""
        lane = getattr(self.model, "reading_lane", None)
        return lane() if callable(lane) else self.model

    def _fallback(self, step_name: str, exc: Exception) -> _Outcome:
        return _Outcome(options=[Option(self.policy.fallback, next=step_name)], probabilities=[None],
                        chosen_index=0, chosen_by="fallback", error=f"{type(exc).__name__}: {exc}")

    def _commit(self, conversation: Conversation, step_name: str, text: str, facts: BaseModel,
                known: dict[str, Any], outcome: _Outcome, clock: "_Clock") -> TurnResult:
        catalog = self.policy.catalog
        index = outcome.chosen_index if outcome.chosen_index is not None else 0
        chosen = outcome.options[index]
        response = catalog[chosen.response]
        confidence = outcome.probabilities[index] if outcome.probabilities else None
        reply = response.render(chosen.slots)
        sent: str | None = reply
        status = "escalated" if outcome.chosen_by == "fallback" else "sent"
        new_status = "escalated" if status == "escalated" else "active"
        next_step = chosen.next
        low_confidence = outcome.chosen_by == "model" and (
            confidence < self.confidence_threshold if confidence is not None
            else self.approve_when_confidence_unknown)
        if status == "sent" and step_name != HOLDING_STEP and (response.requires_approval or low_confidence):
            status = "pending"
            new_status = "awaiting_approval"
            sent = catalog[self.policy.holding].render({}) if self.policy.holding else None
            next_step = step_name  # the step advances when an operator approves
        if step_name == HOLDING_STEP:
            new_status = "awaiting_approval"
        ended = status == "sent" and (response.ends_conversation or next_step == END)
        if ended:
            new_status = "closed"
        clock.lap("render")

        views = [OptionView(o.response, o.next, catalog[o.response].coerce_values(o.slots),
                            outcome.probabilities[i] if i < len(outcome.probabilities) else None)
                 for i, o in enumerate(outcome.options)]
        facts_json = facts.model_dump(mode="json")
        if outcome.readings:
            facts_json[FOLLOW_UP_READINGS] = outcome.readings
        revision = conversation.revision
        conversation.step = next_step if next_step != END else conversation.step
        conversation.status = new_status
        conversation.known_json = json.dumps(known, sort_keys=True, default=str)
        conversation.turns += 1
        latency = clock.laps()
        decision = Decision(
            conversation_id=conversation.id, turn=conversation.turns, created_at=utcnow(),
            policy_version_id=self.policy_version.id or 0, policy_sha256=self._policy_sha256,
            model_name=self.model.name, step=step_name,
            customer_text=text, facts_json=json.dumps(facts_json, sort_keys=True),
            options_json=json.dumps([v.__dict__ for v in views], sort_keys=True, default=str),
            chosen_index=outcome.chosen_index, response_id=chosen.response, chosen_by=outcome.chosen_by,
            confidence=confidence, status=status, reply_text=reply, sent_text=sent, next_step=next_step,
            error=outcome.error, latency_json=json.dumps(latency, sort_keys=True))
        stored = self.store.append_turn(decision, conversation, revision)
        latency["commit"] = clock.lap("commit")
        latency["total"] = clock.total()
        return TurnResult(
            conversation_id=conversation.id, decision_id=stored.id or 0, reply=sent, response_id=chosen.response,
            status=status, step=step_name, next_step=next_step, facts=facts_json, options=views,
            chosen_index=outcome.chosen_index, chosen_by=outcome.chosen_by, confidence=confidence,
            latency_ms=latency, error=outcome.error, ended=ended)

    def _record_only(self, conversation: Conversation, text: str, clock: "_Clock") -> TurnResult:
        """Paused or taken over: record the message (chained) and leave the answer to the operator."""
        revision = conversation.revision
        conversation.turns += 1
        latency = clock.laps()
        decision = Decision(
            conversation_id=conversation.id, turn=conversation.turns, created_at=utcnow(),
            policy_version_id=self.policy_version.id or 0, policy_sha256=self._policy_sha256,
            model_name=self.model.name, step=conversation.step, customer_text=text, facts_json="{}",
            options_json="[]", chosen_by="none", status="received", next_step=conversation.step,
            latency_json=json.dumps(latency, sort_keys=True))
        stored = self.store.append_turn(decision, conversation, revision)
        return TurnResult(
            conversation_id=conversation.id, decision_id=stored.id or 0, reply=None, response_id=None,
            status="received", step=conversation.step, next_step=conversation.step, facts={}, options=[],
            chosen_index=None, chosen_by="none", confidence=None, latency_ms=latency)

    def _history(self, conversation_id: str) -> list[tuple[str, str]]:
        lines: list[tuple[str, str]] = []
        for row in self.store.transcript(conversation_id):
            if isinstance(row, Decision) and row.customer_text:
                lines.append(("Customer", row.customer_text))
            if row.sent_text:
                lines.append(("Agent", row.sent_text))
        return lines


class _Clock:
    """Per-stage wall-clock laps in milliseconds."""

    def __init__(self) -> None:
        self._start = self._last = time.perf_counter()
        self._laps: dict[str, float] = {}

    def lap(self, name: str, queued_ms: float = 0.0) -> float:
        """Close the lap ``name``; ``queued_ms`` of it spent waiting for a shared model goes to
        the ``model_queue`` lap instead, so ``extract``/``choose`` are the model's own time."""
        now = time.perf_counter()
        elapsed = (now - self._last) * 1000
        if queued_ms > 0:
            queued_ms = min(queued_ms, elapsed)
            self._laps["model_queue"] = round(self._laps.get("model_queue", 0.0) + queued_ms, 3)
            elapsed -= queued_ms
        self._laps[name] = round(self._laps.get(name, 0.0) + elapsed, 3)
        self._last = now
        return self._laps[name]

    def laps(self) -> dict[str, float]:
        return dict(self._laps)

    def total(self) -> float:
        return round((time.perf_counter() - self._start) * 1000, 3)
