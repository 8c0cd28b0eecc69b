"""The Agent: one customer turn, exactly as docs/design.md ("One turn") draws it.

    1 load conversation state                       store
    2 extract the facts the current step declares    model (typed + constrained)
    3 run the step: it returns the allowed options   policy code, no model
    4 one option: take it; several: model picks one  model (choice-constrained)
    5 gate: requires_approval or low confidence      -> pending            sopagent/kernel.py
    6 append the decision, its planned effects and   store (one txn, hash-chained)
      the new state
    7 run the effects once, after the commit (after  backend actions     sopagent/outbox.py
      approval when held); chain their outcome
    8 render the reply (effect results filled in)    catalog
    9 return the reply (only what is recorded is said)

The engine knows nothing about HTTP or terminals.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from pydantic import BaseModel

from sopagent import prompts
from sopagent.effects import Effect
from sopagent.errors import ConstraintViolationError, ConversationError, ModelError, PolicyError
from sopagent.grounding import FIELD_PROBABILITIES, MODEL_OUTPUT, UNGROUNDED, settle_facts
from sopagent.kernel import (
    HOLDING_STEP,
    ChosenBy,
    GateSettings,
    Outcome,
    Status,
    check_actions,
    fallback_outcome,
    option_view,
    run_step,
    settle,
    views_json,
)
from sopagent.languages import LANGUAGE_PROBABILITIES, LANGUAGE_QUESTION, language_reading
from sopagent.models.base import (
    CallStats,
    ChatPrompt,
    DecisionModel,
    PromptCachingModel,
    ReadingLaneModel,
)
from sopagent.outbox import EffectRunner
from sopagent.policy import END, FOLLOW_UP_READINGS, NOT_SAID, NoFacts, OneOf, Option, Policy, Turn, one_token_fields
from sopagent.redact import mask_sensitive
from sopagent.store import LANGUAGE_KEY, Conversation, Decision, OutboxEffect, Store, utcnow
from sopagent.store.store import runner_identity

OPERATOR_HOLDS = ("paused", "taken_over", "escalated")
"""Conversation states in which the agent records the customer's message but does not answer: an
operator paused or took it over, or the agent handed it to a person (the fallback reply said so), until
an operator hands it back."""


@dataclass(frozen=True)
class OptionView:
    """An allowed option as recorded and shown: response id, bound slots, next step, probability,
    and the actions it would take."""

    response_id: str
    next_step: str
    slots: dict[str, Any]
    probability: float | None
    effects: list[dict[str, Any]] = field(default_factory=list)
    """The option's planned actions: name, arguments, irreversible."""


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
    effects: list[dict[str, Any]] = field(default_factory=list)
    """The decision's effects as they stand: name, arguments, status (held, done, failed...), result."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the ``--jsonl`` line)."""
        return {
            "conversation_id": self.conversation_id, "decision_id": self.decision_id, "reply": self.reply,
            "response_id": self.response_id, "status": self.status, "step": self.step,
            "next_step": self.next_step, "facts": self.facts,
            "options": [{"id": o.response_id, "probability": o.probability, "next": o.next_step,
                         "slots": o.slots, "effects": o.effects} for o in self.options],
            "chosen_index": self.chosen_index, "chosen_by": self.chosen_by, "confidence": self.confidence,
            "latency_ms": self.latency_ms, "error": self.error, "ended": self.ended, "effects": self.effects,
        }


def facts_prompt(system: str, context: str, schema: type[BaseModel], text: str) -> ChatPrompt:
    """How the model is asked for a step's facts: one lettered label for a :class:`OneOf`, else JSON."""
    if issubclass(schema, OneOf):
        texts = None if schema.in_policy_text else list(schema.options.values())
        question = "" if schema.in_policy_text else schema.question.replace("{message}", text)
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


@dataclass
class MessageReading:
    """A step's facts as read from the customer's latest message, and what was not taken."""

    facts: BaseModel
    probabilities: dict[str, float] = field(default_factory=dict)
    """Each field value's probability as the model decoded it (empty where the backend cannot say)."""
    ungrounded: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Values read but not taken, by field: ``{"value", "why"}`` (:func:`sopagent.grounding.settle_facts`)."""
    readings: list[dict[str, Any]] = field(default_factory=list)
    """The one-token readings of :class:`~sopagent.policy.OneToken` fields (question and answer)."""
    queued_ms: float = 0.0
    """How long the call waited for a shared model."""


def read_message(model: DecisionModel, system: str, context: str, schema: type[BaseModel], message: str,
                 fact_confidence: float = 0.0) -> MessageReading:
    """A step's facts read from the customer's latest ``message`` (in ``context``): constrained JSON,
    or one label for a :class:`OneOf`, then settled: a value the message does not support, one decoded
    with a probability below ``fact_confidence``, or one not valid for its field is not taken."""
    if not schema.model_fields:
        return MessageReading(schema())
    prompt = facts_prompt(system, context, schema, message)
    if issubclass(schema, OneOf):
        facts, stats = read_constrained(model, prompt, schema)
        return MessageReading(facts, queued_ms=stats.queued_ms)
    extraction = model.extract(prompt, schema)
    reading = MessageReading(extraction.facts, dict(extraction.probabilities), queued_ms=extraction.stats.queued_ms)
    if extraction.probabilities:  # the backend measures probabilities: marked fields are read by themselves
        read_one_token_fields(model, system, context, message, reading)
    reading.facts, dropped = settle_facts(reading.facts, message, reading.probabilities, fact_confidence,
                                          extraction.invalid)
    reading.ungrounded.update(dropped)
    return reading


def read_one_token_fields(model: DecisionModel, system: str, context: str, message: str,
                          reading: MessageReading) -> None:
    """Read each :class:`~sopagent.policy.OneToken` field of ``reading.facts`` with one constrained token
    (its values after an explicit "not said"), asked under the policy's text right after the JSON
    reading; the value taken is the label read with at least the field's ``at_least``, else the
    field's default (a JSON value that differs is recorded as not taken)."""
    facts = reading.facts
    updates: dict[str, Any] = {}
    for name, marker in one_token_fields(type(facts)).items():
        question = f'The customer\'s latest message is: "{message}"\n{marker.question}'
        answer, stats = read_follow_up(model, context, question, marker.labels, system)
        reading.queued_ms += stats.queued_ms
        label = answer.label if isinstance(answer, OneOf) and answer.label else NOT_SAID
        probability = answer.probabilities.get(label, 0.0) if isinstance(answer, OneOf) else 0.0
        reading.readings.append({"question": question, "schema": "OneToken", "field": name,
                                 "answer": answer.model_dump(mode="json"), "under_policy_text": True})
        default, read_before = type(facts).model_fields[name].default, getattr(facts, name)
        value = label if label != NOT_SAID and probability >= marker.at_least else default
        if label != NOT_SAID and value == default:
            reading.ungrounded[name] = {"value": label, "why": "unsure", "probability": round(probability, 4)}
        elif label == NOT_SAID and read_before != default:
            reading.ungrounded[name] = {"value": read_before, "why": "not said", "probability": round(
                answer.probabilities.get(read_before, 0.0) if isinstance(answer, OneOf) else 0.0, 4)}
        reading.probabilities[name] = round(probability, 4)
        updates[name] = value
    if updates:
        reading.facts = facts.model_copy(update=updates)


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
    """Runs a policy on a model, records every turn in the audit store, and runs the chosen option's
    actions once each, after the record."""

    def __init__(self, policy: Policy, model: DecisionModel, store: Store, tools: Any = None,
                 confidence_threshold: float | None = None,
                 approve_when_confidence_unknown: bool | None = None,
                 recover_effects: bool = True) -> None:
        """
        Args:
            policy: the SOP (see :func:`sopagent.load_policy`).
            model: a constrained model backend (llama.cpp, or ScriptedModel in tests).
            store: the audit store.
            tools: backend look-ups and actions for the steps; defaults to the policy's own demo tools.
            confidence_threshold: model choices below this probability wait for an operator
                (defaults to the policy's setting).
            approve_when_confidence_unknown: model choices whose probability the backend could
                not report (no log-probabilities) wait for an operator (defaults to the policy's
                setting).
            recover_effects: on start, run the effects of this policy's decisions that a stopped
                process recorded but never ran (each once: see :mod:`sopagent.outbox`).
        """
        self.policy = policy
        self.model = model
        self.store = store
        self.tools = tools if tools is not None else policy.make_tools()
        self.gate = GateSettings.of(policy, confidence_threshold, approve_when_confidence_unknown)
        """When a reply waits for an operator and when an action may be planned (the kernel's gate)."""
        catalog = policy.catalog
        self.policy_version = store.policy_version(
            policy.name, policy.version, policy.source_text, policy.source_sha256,
            catalog.source, catalog.sha256, policy.modules_json)
        self._policy_sha256 = store.policy_digest_of(self.policy_version)
        self._system = prompts.system_text(policy.description)
        self.effects = EffectRunner(store, self.tools, policy.fallback,
                                    catalogs={self.policy_version.id or 0: policy.catalog})
        if recover_effects:
            self.effects.run_pending(policy.name)

    # --- conversations -------------------------------------------------------------------------

    def start(self, customer_ref: str | None = None, metadata: dict[str, Any] | None = None,
              language: str | None = None) -> str:
        """Open a conversation at the policy's start step; return its id.

        ``language``: one of the catalog's languages, which every reply is sent in (None: the catalog's
        first, unless the policy reads it from the first message); a :class:`ConversationError` otherwise.
        """
        metadata = dict(metadata or {})
        if language is not None:
            languages = self.policy.catalog.languages
            if language not in languages:
                raise ConversationError(f"policy {self.policy.name} answers in {', '.join(languages)}, not "
                                        f"{language!r}; start the conversation in one of those")
            metadata[LANGUAGE_KEY] = language
        conversation = Conversation(
            id=str(uuid.uuid4()), policy_name=self.policy.name, policy_version_id=self.policy_version.id or 0,
            customer_ref=customer_ref, metadata_json=json.dumps(metadata), step=self.policy.start)
        self.store.create_conversation(conversation)
        return conversation.id

    def respond(self, conversation_id: str, text: str, request_key: str | None = None) -> TurnResult:
        """Handle one customer message; return the reply only after its decision is committed and
        its actions have run (their outcome chained too).

        ``request_key`` (a client's idempotency key) is recorded with the decision: the same key sent
        again with the same message gets the recorded answer, and nothing runs twice.
        """
        clock = _Clock()
        if isinstance(text, str):  # card numbers and IBANs go no further than this line
            text = mask_sensitive(text, self.policy.sensitive)
        conversation = self.store.get_conversation(conversation_id)
        if conversation.policy_name != self.policy.name:
            raise ConversationError(f"conversation {conversation_id} runs policy {conversation.policy_name!r}, "
                                    f"not {self.policy.name!r}")
        if request_key is not None:
            earlier = self.store.decision_for_request(conversation_id, request_key)
            if earlier is not None:
                if earlier.customer_text is not None and earlier.customer_text != text:
                    raise ConversationError(f"the request key {request_key!r} was already used for another message "
                                            "in this conversation; send a new key with each new message")
                return self.recorded_result(earlier)
        if conversation.status == "closed":
            raise ConversationError(f"conversation {conversation_id} is closed; start a new one")
        if not isinstance(text, str) or not text.strip():
            raise ConversationError("the customer message is empty")
        history = self._history(conversation_id)
        known: dict[str, Any] = json.loads(conversation.known_json)
        clock.lap("load")

        if conversation.status in OPERATOR_HOLDS:
            return self._record_only(conversation, text, clock, request_key)
        step_name = conversation.step
        facts: BaseModel = NoFacts()
        if conversation.status == "awaiting_approval":
            step_name = HOLDING_STEP
            outcome = Outcome(options=[Option(self.policy.holding or self.policy.fallback, next=conversation.step)],
                              probabilities=[1.0], chosen_index=0)
        else:
            context = prompts.conversation_text(history, text)
            try:
                if self._reads_language(conversation):
                    self._read_language(conversation, text)
                    clock.lap("language")
                reading = self._read(step_name, context, text)
                clock.lap("extract", reading.queued_ms)
                facts = reading.facts
                known.update({k: v for k, v in facts.model_dump(mode="json").items() if v is not None})
                outcome = self._decide(conversation, step_name, reading, known, context, clock, text)
            except (ModelError, PolicyError) as exc:
                outcome = fallback_outcome(self.policy, step_name, exc)

        return self._commit(conversation, step_name, text, facts, known, outcome, clock, request_key)

    def recorded_result(self, decision: Decision) -> TurnResult:
        """The answer a recorded decision gave (for a retried request): its reply, or the reply its
        actions' outcome sent, with the options, facts and actions as recorded."""
        effects = self.store.effects(decision.id)
        outcome = self.store.effects_outcome(decision.id or 0) if effects else None
        reply, status, error = decision.sent_text, decision.status, decision.error
        if outcome is not None and decision.status == Status.SENT:
            reply = outcome.sent_text
            if outcome.response_id == self.policy.fallback and decision.response_id != self.policy.fallback:
                status, error = Status.ESCALATED.value, outcome.reason
        views = json.loads(decision.options_json or "[]")
        response = (self.policy.catalog[decision.response_id]
                    if decision.response_id and decision.response_id in self.policy.catalog else None)
        ended = status == Status.SENT and (decision.next_step == END or bool(response and response.ends_conversation))
        return TurnResult(
            conversation_id=decision.conversation_id, decision_id=decision.id or 0, reply=reply,
            response_id=decision.response_id, status=status, step=decision.step, next_step=decision.next_step,
            facts=json.loads(decision.facts_json or "{}"),
            options=[OptionView(v["response_id"], v["next_step"], v["slots"], v.get("probability"),
                                v.get("effects") or []) for v in views],
            chosen_index=decision.chosen_index, chosen_by=decision.chosen_by, confidence=decision.confidence,
            latency_ms=json.loads(decision.latency_json or "{}"), error=error, ended=ended,
            effects=[effect_view(e) for e in effects])

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
        context = prompts.transcript_text([(role, mask_sensitive(line, self.policy.sensitive))
                                           for role, line in transcript])
        facts: BaseModel = NoFacts()
        try:
            reading = MessageReading(facts)
            if customer_text is not None:
                customer_text = mask_sensitive(customer_text, self.policy.sensitive)
                reading = self._read(step, context, customer_text)
            clock.lap("extract", reading.queued_ms)
            facts = reading.facts
            known.update({k: v for k, v in facts.model_dump(mode="json").items() if v is not None})
            outcome = self._decide(conversation, step, reading, known, context, clock, customer_text or "")
        except (ModelError, PolicyError) as exc:
            outcome = fallback_outcome(self.policy, step, exc)
        return self._commit(conversation, step, customer_text or "", facts, known, outcome, clock)

    # --- stages --------------------------------------------------------------------------------

    def prepare_next(self, conversation_id: str) -> CallStats | None:
        """Evaluate the conversation so far into the model's prompt cache, for a backend that keeps one
        (``prefetch``), so that the customer's next turn evaluates only their words and the task: call
        it while the customer types. Nothing is read, decided or recorded. Returns what it evaluated
        (None where there is nothing to prepare)."""
        conversation = self.store.get_conversation(conversation_id)
        if not isinstance(self.model, PromptCachingModel) or conversation.status not in ("active",
                                                                                          "awaiting_approval"):
            return None
        context = prompts.conversation_text(self._history(conversation_id), "")
        return self.model.prefetch(ChatPrompt(self._system, context, ""), prompts.LATEST_MESSAGE)

    def _reads_language(self, conversation: Conversation) -> bool:
        """The policy reads the language from the first message, and the channel set none."""
        return (self.policy.read_language and conversation.turns == 0 and conversation.language() is None
                and len(self.policy.catalog.languages) > 1)

    def _read_language(self, conversation: Conversation, text: str) -> None:
        """Read which of the catalog's languages the first message is in (one constrained token) and keep it
        with the conversation, which commits with the turn."""
        reading = read_follow_up(self._reading_model(), prompts.conversation_text([], text), LANGUAGE_QUESTION,
                                 language_reading(self.policy.catalog.languages))[0]
        assert isinstance(reading, OneOf)
        metadata = json.loads(conversation.metadata_json or "{}")
        metadata[LANGUAGE_KEY] = reading.label or self.policy.catalog.languages[0]
        metadata[LANGUAGE_PROBABILITIES] = reading.probabilities
        conversation.metadata_json = json.dumps(metadata)

    def _read(self, step_name: str, context: str, text: str) -> MessageReading:
        """The step's facts read from the customer's message (:func:`read_message`)."""
        return read_message(self.model, self._system, context, self.policy.steps[step_name].facts, text,
                            self.gate.fact_confidence)

    def _decide(self, conversation: Conversation, step_name: str, reading: MessageReading, known: dict[str, Any],
                context: str, clock: "_Clock", message: str = "") -> Outcome:
        def reader(question: str, schema: type[BaseModel], under_policy_text: bool = False,
                   latest_only: bool = False) -> BaseModel:
            seen = prompts.conversation_text([], message) if latest_only else context
            if under_policy_text:  # after the step reading's own prompt: only the question is new to it
                return read_follow_up(self.model, seen, question, schema, self._system)[0]
            return read_follow_up(self._reading_model(), seen, question, schema)[0]

        turn: Turn[Any, Any] = Turn(facts=reading.facts, known=known, tools=self.tools, step=step_name,
                                    conversation_id=conversation.id, reader=reader,
                                    action_confidence=self.gate.action_confidence, ungrounded=reading.ungrounded,
                                    probabilities=reading.probabilities, message=message,
                                    failures=self._failures_counter())
        options = run_step(self.policy, step_name, turn)
        clock.lap("policy")  # follow-up readings (turn.read) included

        outcome = Outcome(options=options, readings=reading.readings + turn.readings, ungrounded=turn.ungrounded,
                          fact_probabilities=reading.probabilities, failed_checks=turn.failed_checks)
        if len(options) == 1:
            outcome.chosen_index, outcome.probabilities = 0, [1.0]
        else:
            catalog = self.policy.catalog
            texts = [catalog[o.response].description + (f" ({o.hint})" if o.hint else "") for o in options]
            choice = self.model.choose(prompts.choice_prompt(self._system, context, texts), len(options))
            clock.lap("choose", choice.stats.queued_ms)
            if not 0 <= choice.index < len(options):  # checked again after decoding
                raise ConstraintViolationError(f"model chose option {choice.index} of {len(options)}")
            outcome.chosen_index = choice.index
            outcome.chosen_by = ChosenBy.MODEL
            outcome.probabilities = list(choice.probabilities) or [None] * len(options)
        check_actions(outcome.chosen, turn, self.gate, step_name)
        return outcome

    def _failures_counter(self) -> Callable[[str, str], int]:
        """How a turn counts a check's recent failures for a subject (:meth:`Turn.recent_failures`)."""
        since = (dt.datetime.now(dt.timezone.utc) - self.policy.lockout_window).isoformat(timespec="microseconds")
        return lambda check, subject: self.store.recent_failures(self.policy.name, check, subject, since)

    def _reading_model(self) -> DecisionModel:
        """The model for follow-up readings: the backend's own reading lane where it has one (a second
        llama.cpp context keeps their prompt prefix apart), else the agent's model."""
        return self.model.reading_lane() if isinstance(self.model, ReadingLaneModel) else self.model

    def _commit(self, conversation: Conversation, step_name: str, text: str, facts: BaseModel,
                known: dict[str, Any], outcome: Outcome, clock: "_Clock", request_key: str | None = None) -> TurnResult:
        catalog = self.policy.catalog
        verdict = settle(self.policy, step_name, outcome, self.gate, conversation.language())
        clock.lap("render")

        views = [option_view(catalog, o, outcome.probabilities[i] if i < len(outcome.probabilities) else None)
                 for i, o in enumerate(outcome.options)]
        facts_json = facts.model_dump(mode="json")
        if outcome.readings:
            facts_json[FOLLOW_UP_READINGS] = outcome.readings
        if outcome.ungrounded:
            facts_json[UNGROUNDED] = outcome.ungrounded
        if outcome.fact_probabilities:
            facts_json[FIELD_PROBABILITIES] = outcome.fact_probabilities
        if outcome.model_output is not None:
            facts_json[MODEL_OUTPUT] = outcome.model_output
        revision = conversation.revision
        conversation.step = verdict.next_step if verdict.next_step != END else conversation.step
        conversation.status = verdict.conversation_status
        conversation.known_json = json.dumps(known, sort_keys=True, default=str)
        conversation.turns += 1
        latency = clock.laps()
        chosen = outcome.chosen
        decision = Decision(
            conversation_id=conversation.id, turn=conversation.turns, created_at=utcnow(),
            policy_version_id=self.policy_version.id or 0, policy_sha256=self._policy_sha256,
            model_name=self.model.name, step=step_name,
            customer_text=text, facts_json=json.dumps(facts_json, sort_keys=True),
            options_json=views_json(views), chosen_index=outcome.chosen_index, response_id=chosen.response,
            chosen_by=outcome.chosen_by.value, confidence=outcome.confidence, status=verdict.status.value,
            reply_text=verdict.reply, sent_text=verdict.sent, next_step=verdict.next_step,
            error=outcome.error, latency_json=json.dumps(latency, sort_keys=True))
        # Effects to run now are recorded already claimed by this process: one transaction fewer, and a
        # crash before they ran is recovered at once by the next process on this host (the claimer is gone).
        planned = planned_effects(self.policy.name, outcome.chosen_index or 0, verdict.effects,
                                  "held" if verdict.status == Status.PENDING else "running")
        stored = self.store.append_turn(decision, conversation, revision, planned, request_key,
                                        outcome.failed_checks)
        latency["commit"] = clock.lap("commit")
        sent, status, error, ended = verdict.sent, verdict.status, outcome.error, verdict.ended
        if planned and verdict.status == Status.SENT:
            run = self.effects.run_decision(stored.id or 0, stored, planned)
            if run is None:  # recorded meanwhile by another runner: say what that record says
                recorded = self.store.effects_outcome(stored.id or 0)
                sent = recorded.sent_text if recorded is not None else None
            else:
                sent = run.reply
                if run.failed:
                    # the public summary (names and statuses): the error text may quote personal data
                    # and is kept in the effects' own records
                    status, ended, error = Status.ESCALATED, False, run.action.reason
            latency["effects"] = clock.lap("effects")
        latency["total"] = clock.total()
        return TurnResult(
            conversation_id=conversation.id, decision_id=stored.id or 0, reply=sent, response_id=chosen.response,
            status=status.value, step=step_name, next_step=verdict.next_step, facts=facts_json,
            options=[OptionView(v["response_id"], v["next_step"], v["slots"], v["probability"], v["effects"])
                     for v in views],
            chosen_index=outcome.chosen_index, chosen_by=outcome.chosen_by.value, confidence=outcome.confidence,
            latency_ms=latency, error=error, ended=ended,
            effects=[effect_view(e) for e in planned])

    def _record_only(self, conversation: Conversation, text: str, clock: "_Clock",
                     request_key: str | None = None) -> TurnResult:
        """Paused or taken over: record the message (chained) and leave the answer to the operator."""
        revision = conversation.revision
        conversation.turns += 1
        latency = clock.laps()
        decision = Decision(
            conversation_id=conversation.id, turn=conversation.turns, created_at=utcnow(),
            policy_version_id=self.policy_version.id or 0, policy_sha256=self._policy_sha256,
            model_name=self.model.name, step=conversation.step, customer_text=text, facts_json="{}",
            options_json="[]", chosen_by=ChosenBy.NONE.value, status=Status.RECEIVED.value,
            next_step=conversation.step, latency_json=json.dumps(latency, sort_keys=True))
        stored = self.store.append_turn(decision, conversation, revision, request_key=request_key)
        return TurnResult(
            conversation_id=conversation.id, decision_id=stored.id or 0, reply=None, response_id=None,
            status=Status.RECEIVED.value, step=conversation.step, next_step=conversation.step, facts={}, options=[],
            chosen_index=None, chosen_by=ChosenBy.NONE.value, confidence=None, latency_ms=latency)

    def _history(self, conversation_id: str) -> list[tuple[str, str]]:
        lines: list[tuple[str, str]] = []
        for row in self.store.transcript(conversation_id):
            if isinstance(row, Decision) and row.customer_text:
                lines.append(("Customer", row.customer_text))
            if row.sent_text:
                lines.append(("Agent", row.sent_text))
        return lines


def planned_effects(policy_name: str, option_index: int, effects: Sequence[Effect],
                    status: str) -> list[OutboxEffect]:
    """Outbox rows for an option's planned actions (the store fills decision id and idempotency key);
    ``running`` ones are claimed by this process, to run right after the commit."""
    claimed = status == "running"
    now = utcnow() if claimed and effects else None
    return [OutboxEffect(policy_name=policy_name, option_index=option_index, position=i, name=e.name,
                   irreversible=e.irreversible, status=status, decision_id=0, conversation_id="",
                   idempotency_key="", arguments_json=json.dumps(dict(e.arguments), sort_keys=True),
                   claimed_at=now if claimed else None, claimed_by=runner_identity() if claimed else None,
                   attempts=1 if claimed else 0)
            for i, e in enumerate(effects)]


def effect_view(effect: OutboxEffect) -> dict[str, Any]:
    """An outbox row as shown to people and front ends (arguments and result are personal data)."""
    return {"name": effect.name, "arguments": json.loads(effect.arguments_json or "{}"),
            "status": effect.status, "result": json.loads(effect.result_json) if effect.result_json else None,
            "error": effect.error, "idempotency_key": effect.idempotency_key, "updated_at": effect.updated_at}


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
