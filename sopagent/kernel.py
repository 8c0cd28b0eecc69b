"""The decision kernel: run the step, gate the chosen option, plan its effects, render its reply.

Pure functions over a policy and what was read; no model calls, no store. ``Agent.respond``,
``Agent.replay`` and ``sopagent audit replay`` all decide through here, so the gate (approval,
confidence, irreversible actions) has one definition.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Sequence

from sopagent.catalog import Catalog
from sopagent.effects import RESULT_MARK, Effect, result_value
from sopagent.errors import ModelError, PolicyError
from sopagent.policy import END, OneOf, Option, Policy, Turn
from sopagent.status import ChosenBy, Status

__all__ = ["ChosenBy", "GateSettings", "HOLDING_STEP", "Outcome", "Status", "Verdict", "action_basis", "check_actions",
           "fallback_outcome", "option_view", "render_with_results", "run_step", "settle", "views_json"]

HOLDING_STEP = "awaiting_approval"
"""The step recorded for a customer message that arrives while a reply waits for approval."""


@dataclass(frozen=True)
class GateSettings:
    """When a chosen reply waits for an operator, and when an action may be planned."""

    confidence_threshold: float = 0.0
    """A model choice below this probability waits for an operator."""
    approve_when_confidence_unknown: bool = False
    """A model choice whose probability is unknown waits for an operator."""
    action_confidence: float = 0.8
    """An irreversible action needs a reading at least this probable."""
    fact_confidence: float = 0.0
    """An optional fact read with less probability than this is not taken."""

    @classmethod
    def of(cls, policy: Policy, confidence_threshold: float | None = None,
           approve_when_confidence_unknown: bool | None = None) -> "GateSettings":
        """The policy's settings, with an agent's overrides."""
        return cls(policy.confidence_threshold if confidence_threshold is None else confidence_threshold,
                   policy.approve_when_confidence_unknown if approve_when_confidence_unknown is None
                   else approve_when_confidence_unknown,
                   policy.action_confidence, policy.fact_confidence)


@dataclass
class Outcome:
    """What a step allowed and which option was chosen, by whom, with which probabilities."""

    options: list[Option] = field(default_factory=list)
    probabilities: list[float | None] = field(default_factory=list)
    chosen_index: int | None = None
    chosen_by: ChosenBy = ChosenBy.POLICY
    error: str | None = None
    readings: list[dict[str, Any]] = field(default_factory=list)
    ungrounded: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Values the model read that the customer's message does not support (dropped as not given)."""
    fact_probabilities: dict[str, float] = field(default_factory=dict)
    """Each fact's probability as the model decoded it."""
    failed_checks: list[tuple[str, str]] = field(default_factory=list)
    """The ``(check, subject)`` failures the step noted, stored with the decision."""
    model_output: str | None = None
    """What the model wrote when its answer was unusable (personal: recorded with the facts, never in
    the public error)."""

    @property
    def chosen(self) -> Option:
        """The chosen option (the first when none was chosen)."""
        return self.options[self.chosen_index or 0]

    @property
    def confidence(self) -> float | None:
        """The chosen option's probability."""
        index = self.chosen_index or 0
        return self.probabilities[index] if index < len(self.probabilities) else None


@dataclass(frozen=True)
class Verdict:
    """The kernel's answer: status, where the conversation goes, what is said now, what is done."""

    status: Status
    next_step: str
    reply: str
    """The chosen reply as recorded; slots an effect fills read ``<result of NAME>``."""
    sent: str | None
    """What the customer receives now: the reply, the holding reply, or None when the reply waits for
    the effects that fill it (the effect runner sends it) or for an operator with no holding reply."""
    effects: tuple[Effect, ...]
    """The chosen option's actions: run after the commit (sent) or after approval (pending)."""
    ended: bool
    conversation_status: str


def fallback_outcome(policy: Policy, step_name: str, exc: Exception) -> Outcome:
    """The outcome of a failed turn: the policy's fallback reply, with the error recorded."""
    return Outcome(options=[Option(policy.fallback, next=step_name)], probabilities=[None], chosen_index=0,
                   chosen_by=ChosenBy.FALLBACK, error=f"{type(exc).__name__}: {exc}",
                   model_output=getattr(exc, "model_output", None))


def run_step(policy: Policy, step_name: str, turn: Turn[Any, Any]) -> list[Option]:
    """The guards, then the step: the options the policy allows, validated."""
    options: list[Option] | None = None
    try:
        for guard in policy.guards:
            options = guard(turn)
            if options:
                break
        if not options:
            options = policy.steps[step_name].function(turn)
    except (PolicyError, ModelError):
        raise
    except Exception as exc:  # a bug or a failing backend look-up in policy code
        raise PolicyError(f"step {step_name!r} raised {type(exc).__name__}: {exc}") from exc
    policy.validate_options(step_name, options)
    return options


def action_basis(turn: Turn[Any, Any]) -> float | None:
    """The probability behind the turn's actions: the clear-yes reading of :meth:`Turn.confirmed` when
    the step made it, else the step's own :class:`OneOf` label's; unknown for a JSON reading."""
    if turn.confirmation is not None:
        return turn.confirmation
    facts = turn.facts
    if isinstance(facts, OneOf) and facts.label is not None:
        return facts.probabilities.get(facts.label)
    return None


def check_actions(option: Option, turn: Turn[Any, Any], settings: GateSettings, step_name: str) -> None:
    """Refuse an option that plans an irreversible action on a reading below the policy's bar."""
    irreversible = [e for e in option.effects if e.irreversible]
    if not irreversible or settings.action_confidence <= 0:
        return
    confidence = action_basis(turn)
    if confidence is None or confidence < settings.action_confidence:
        read = "a reading with no probability" if confidence is None else f"a reading of p={confidence:.2f}"
        raise PolicyError(
            f"step {step_name!r} planned the irreversible action {irreversible[0].name} on {read}, below the "
            f"policy's action_confidence {settings.action_confidence:g}",
            fix="read the answer with facts=Confirmation and plan the action only when turn.confirmed() is "
                "true; otherwise ask again")


def settle(policy: Policy, step_name: str, outcome: Outcome, settings: GateSettings,
           language: str | None = None) -> Verdict:
    """Gate the chosen option and say what is sent now (in the conversation's ``language``), what is done,
    and the conversation's new state."""
    catalog = policy.catalog.in_language(language)
    chosen = outcome.chosen
    response = catalog[chosen.response]
    pending_slots = chosen.pending_slots()
    reply = response.preview(chosen.slots, pending_slots) if pending_slots else response.render(chosen.slots)
    status = Status.ESCALATED if outcome.chosen_by == ChosenBy.FALLBACK else Status.SENT
    conversation_status = "escalated" if status == Status.ESCALATED else "active"
    next_step = chosen.next
    confidence = outcome.confidence
    low_confidence = outcome.chosen_by == ChosenBy.MODEL and (
        confidence < settings.confidence_threshold if confidence is not None
        else settings.approve_when_confidence_unknown)
    sent: str | None = None if chosen.effects else reply
    if status == Status.SENT and step_name != HOLDING_STEP and (response.requires_approval or low_confidence):
        status = Status.PENDING
        conversation_status = "awaiting_approval"
        sent = catalog[policy.holding].render({}) if policy.holding else None
        next_step = step_name  # the step advances when an operator approves
    if step_name == HOLDING_STEP:
        conversation_status = "awaiting_approval"
    ended = status == Status.SENT and (response.ends_conversation or next_step == END)
    if ended:
        conversation_status = "closed"
    effects = chosen.effects if status in (Status.SENT, Status.PENDING) else ()
    return Verdict(status, next_step, reply, sent, effects, ended, conversation_status)


def option_view(catalog: Catalog, option: Option, probability: float | None) -> dict[str, Any]:
    """An option as recorded with its decision (and shown to operators): response, slots, next step,
    probability, and the actions it would take with their arguments."""
    return {"response_id": option.response, "next_step": option.next,
            "slots": catalog[option.response].coerce_values(option.slots, option.pending_slots()),
            "probability": probability, "effects": [e.to_json() for e in option.effects]}


def render_with_results(catalog: Catalog, view: dict[str, Any], results: Sequence[Any]) -> str:
    """A recorded option's reply with the slots its effects fill taken from their recorded results."""
    slots = {name: (result_value(results[value[RESULT_MARK]], value.get("field"))
                    if isinstance(value, dict) and RESULT_MARK in value else value)
             for name, value in view["slots"].items()}
    return catalog[view["response_id"]].render(slots)


def views_json(views: list[dict[str, Any]]) -> str:
    """The options as stored in a decision's ``options_json``."""
    return json.dumps(views, sort_keys=True, default=str)
