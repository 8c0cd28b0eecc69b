"""Replay recorded conversations under another policy version and report what would change.

Each selected conversation is re-run turn by turn from its recorded customer messages, with the
new policy's own fresh demo backend (``policy.make_tools()``, one per conversation, so tools with
side effects act on a throwaway instance) and its own known facts carried from turn to turn.
Where the model's input is unchanged (same step, same extraction prompt; same allowed options and
choice prompt), the recorded model output is reused: no model call. The model is called (loaded on
first need) only where something changed.
"""

from __future__ import annotations

import json
import sys
import tempfile
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ValidationError

from sopagent import prompts
from sopagent.audit.query import AuditFilter, select_rows
from sopagent.catalog import parse_catalog
from sopagent.effects import describe
from sopagent.engine import facts_prompt, read_follow_up, read_message
from sopagent.errors import ModelError, PolicyError, StoreError
from sopagent.grounding import FIELD_PROBABILITIES, MODEL_OUTPUT, UNGROUNDED
from sopagent.kernel import (
    HOLDING_STEP,
    ChosenBy,
    GateSettings,
    Outcome,
    Status,
    check_actions,
    fallback_outcome,
    run_step,
    settle,
)
from sopagent.models.base import DecisionModel
from sopagent.policy import END, FOLLOW_UP_READINGS, NoFacts, Option, Policy, Turn, load_policy
from sopagent.store import Decision, OperatorAction, PolicyVersion, Store


@dataclass
class TurnChange:
    """One past turn whose outcome differs under the new policy."""

    decision_id: int
    conversation_id: str
    turn: int
    step: str
    recorded: str
    """Recorded response id and status."""
    replayed: str
    """Replayed response id and status."""
    what: list[str]
    """allowed set, choice, reply, status, effects."""
    escalates: bool
    effects: list[str] = field(default_factory=list)
    """How the actions taken would differ: ``would no longer refund_fee(...)``, ``would now ...``."""


@dataclass
class ReplayReport:
    """What replaying past conversations under a policy shows."""

    policy: str
    turns: int = 0
    conversations: int = 0
    changes: list[TurnChange] = field(default_factory=list)
    model_calls: int = 0
    reused: int = 0
    """Turns whose recorded model output was reused."""
    skipped: list[str] = field(default_factory=list)
    """Conversations (or their remainder) that could not be replayed, with why."""

    @property
    def changed_share(self) -> float:
        """Share of replayed turns whose outcome changes."""
        return len(self.changes) / self.turns if self.turns else 0.0

    def summary(self) -> str:
        """The one-line verdict."""
        escalate = sum(1 for c in self.changes if c.escalates)
        deeds = sum(1 for c in self.changes if c.effects)
        return (f"this change affects {self.changed_share:.1%} of {self.turns:,} past turns "
                f"({len(self.changes)} turns in {self.conversations} conversations replayed); "
                f"{escalate} would now escalate; {deeds} would act differently on the account; "
                f"{self.model_calls} model calls, {self.reused} recorded outputs reused")


def load_policy_spec(store: Store, spec: str) -> Policy:
    """A policy file path, or a stored policy version id (``3`` or ``#3``) rebuilt from its snapshot."""
    ident = spec[1:] if spec.startswith("#") else spec
    if ident.isdigit() and not Path(spec).exists():
        with store.session() as session:
            version = session.get(PolicyVersion, int(ident))
        if version is None:
            raise StoreError(f"no stored policy version {ident}; list them with `sopagent audit versions`")
        return load_stored_policy(version)
    return load_policy(spec)


def load_stored_policy(version: PolicyVersion) -> Policy:
    """Rebuild a policy from its stored snapshot: its source, its helper modules and its catalog.

    The code comes from the snapshot; files the code reads (demo data) are looked up in the folder
    the policy was recorded from, or a temporary folder when that is gone.
    """
    snapshot = json.loads(version.modules_json or "{}")
    origin = Path(snapshot.get("origin") or tempfile.mkdtemp(prefix="sopagent-snapshot-"))
    policy_file = origin / (snapshot.get("policy_file") or f"{version.name}.py")
    saved = {name: sys.modules.get(name) for name in snapshot.get("modules", {})}
    module = types.ModuleType(f"sopagent_snapshot_{version.name}_{version.id}")
    module.__file__ = str(policy_file)
    try:
        for name, info in snapshot.get("modules", {}).items():
            helper = types.ModuleType(name)
            helper.__file__ = str(origin / info["path"])
            sys.modules[name] = helper
            exec(compile(info["source"], helper.__file__, "exec"), helper.__dict__)  # noqa: S102 (stored policy code)
        sys.modules[module.__name__] = module
        exec(compile(version.source, str(policy_file), "exec"), module.__dict__)  # noqa: S102
    except Exception as exc:
        raise PolicyError(f"stored policy version {version.id} could not be rebuilt: {type(exc).__name__}: {exc}",
                          fix="replay with the policy file instead: --policy PATH") from exc
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous
    policy = getattr(module, "policy", None)
    if not isinstance(policy, Policy):
        raise PolicyError(f"stored policy version {version.id} defines no `policy = Policy(...)`")
    policy._catalog = parse_catalog(version.catalog_source, f"<catalog of {version.name} {version.version}>")
    return policy


class _Replayer:
    def __init__(self, store: Store, policy: Policy, model_factory: Callable[[], DecisionModel] | None) -> None:
        self.store = store
        self.policy = policy
        self.model_factory = model_factory
        self._model: DecisionModel | None = None
        self._old: dict[int, Policy | None] = {}
        self.system = prompts.system_text(policy.description)
        self.gate = GateSettings.of(policy)
        self.report = ReplayReport(policy=f"{policy.name} {policy.version}")

    def model(self) -> DecisionModel:
        if self._model is None:
            if self.model_factory is None:
                raise ModelError("this replay needs the model (the policy change altered a model input); "
                                 "pass --model or allow the embedded model")
            self._model = self.model_factory()
        self.report.model_calls += 1
        return self._model

    def old_policy(self, version_id: int) -> Policy | None:
        if version_id not in self._old:
            with self.store.session() as session:
                version = session.get(PolicyVersion, version_id)
            try:
                self._old[version_id] = load_stored_policy(version) if version else None
            except PolicyError:
                self._old[version_id] = None
        return self._old[version_id]

    def conversation(self, rows: list[Any]) -> None:
        policy = self.policy
        tools = policy.make_tools()
        step: str = policy.start
        known: dict[str, Any] = {}
        new_history: list[tuple[str, str]] = []
        old_history: list[tuple[str, str]] = []
        pending: dict[int, Option] = {}
        self.report.conversations += 1
        for row in rows:
            if isinstance(row, OperatorAction):
                if row.action in ("approve", "override") and row.decision_id in pending:
                    option = pending.pop(row.decision_id)
                    nxt = option.next if row.action == "approve" else (row.next_step or option.next)
                    step = nxt if nxt in policy.steps else step
                elif row.action == "hand_back" and row.next_step in policy.steps:
                    step = row.next_step or step
                if row.sent_text:
                    if row.action != "effects":  # the replay says its own effects' reply (see turn)
                        new_history.append(("Agent", row.sent_text))
                    old_history.append(("Agent", row.sent_text))
                continue
            if row.erased_at is not None or row.customer_text is None:
                self.report.skipped.append(f"{row.conversation_id}: personal content erased from turn {row.turn}")
                return
            if row.status == Status.RECEIVED or row.step == HOLDING_STEP:
                for history in (new_history, old_history):
                    history.append(("Customer", row.customer_text))
                    if row.sent_text:
                        history.append(("Agent", row.sent_text))
                continue
            if step == END:
                self.report.turns += 1
                self.report.changes.append(TurnChange(row.id or 0, row.conversation_id, row.turn, row.step,
                                                      f"{row.response_id} [{row.status}]", "(conversation over)",
                                                      ["conversation ended earlier"], False))
                continue
            step, sent = self.turn(row, step, known, tools, new_history, old_history, pending)
            new_history += [("Customer", row.customer_text)] + ([("Agent", sent)] if sent else [])
            old_history += [("Customer", row.customer_text)] + ([("Agent", row.sent_text)] if row.sent_text else [])

    def turn(self, row: Decision, step: str, known: dict[str, Any], tools: Any, new_history: list[tuple[str, str]],
             old_history: list[tuple[str, str]], pending: dict[int, Option]) -> tuple[str, str | None]:
        policy, catalog = self.policy, self.policy.catalog
        self.report.turns += 1
        text = row.customer_text or ""
        context = prompts.conversation_text(new_history, text)
        old_context = prompts.conversation_text(old_history, text)
        old = self.old_policy(row.policy_version_id)
        old_system = prompts.system_text(old.description) if old else None
        model_used = False
        facts: BaseModel = NoFacts()
        try:
            schema = policy.steps[step].facts
            if schema.model_fields:
                prompt = facts_prompt(self.system, context, schema, text)
                reuse = (step == row.step and old is not None and row.step in old.steps
                         and facts_prompt(old_system or "", old_context, old.steps[row.step].facts, text) == prompt)
                facts = self._recorded_facts(row, schema) if reuse else None  # type: ignore[assignment]
                if facts is None:
                    model_used = True
                    facts = read_message(self.model(), self.system, context, schema, text,
                                         self.gate.fact_confidence).facts
            known.update({k: v for k, v in facts.model_dump(mode="json").items() if v is not None})
            recorded_readings = self._recorded_readings(row) if old_context == context else []

            def reader(question: str, schema: type[BaseModel], under_policy_text: bool = False,
                       latest_only: bool = False) -> BaseModel:
                nonlocal model_used
                for reading in recorded_readings:  # the same question on the same conversation: as recorded
                    if reading.get("question") == question and reading.get("schema") == schema.__name__ \
                            and bool(reading.get("under_policy_text")) == under_policy_text \
                            and bool(reading.get("latest_only")) == latest_only:
                        try:
                            return schema.model_validate(reading.get("answer") or {})
                        except ValidationError:
                            break
                model_used = True
                system = self.system if under_policy_text else prompts.READING_SYSTEM
                seen = prompts.conversation_text([], text) if latest_only else context
                return read_follow_up(self.model(), seen, question, schema, system)[0]

            turn: Turn[Any, Any] = Turn(facts=facts, known=known, tools=tools, step=step,
                                        conversation_id=row.conversation_id, reader=reader,
                                        action_confidence=self.gate.action_confidence, message=text)
            options = run_step(policy, step, turn)
            recorded = json.loads(row.options_json or "[]")
            views = [{"response_id": o.response, "next_step": o.next,
                      "slots": json.loads(json.dumps(catalog[o.response].coerce_values(o.slots, o.pending_slots()),
                                                     default=str))}
                     for o in options]
            same_allowed = views == [{k: r[k] for k in ("response_id", "next_step", "slots")} for r in recorded]
            outcome = Outcome(options=options, probabilities=[1.0], chosen_index=0)
            if len(options) > 1:
                texts = [catalog[o.response].description + (f" ({o.hint})" if o.hint else "") for o in options]
                old_texts = None
                if old is not None and same_allowed and row.chosen_index is not None:
                    try:
                        old_texts = [old.catalog[r["response_id"]].description for r in recorded]
                    except KeyError:
                        old_texts = None
                prompt = prompts.choice_prompt(self.system, context, texts)
                reuse_choice = (old_texts is not None and row.chosen_by == ChosenBy.MODEL and not model_used
                                and [t.split(" (")[0] for t in texts] == old_texts
                                and prompt.context == old_context)
                if reuse_choice:
                    outcome.chosen_index = row.chosen_index or 0
                    outcome.probabilities = [r.get("probability") for r in recorded]
                else:
                    model_used = True
                    choice = self.model().choose(prompt, len(options))
                    outcome.chosen_index, outcome.probabilities = choice.index, list(choice.probabilities)
                outcome.chosen_by = ChosenBy.MODEL
            check_actions(outcome.chosen, turn, self.gate, step)
        except (ModelError, PolicyError, KeyError, ValueError, TypeError, AttributeError) as exc:
            outcome = fallback_outcome(policy, step, exc)
            same_allowed = False
        if not model_used:
            self.report.reused += 1
        verdict = settle(policy, step, outcome, self.gate)
        chosen = outcome.chosen
        if verdict.status == Status.PENDING:
            pending[row.id or 0] = chosen
        what = []
        if not same_allowed:
            what.append("allowed set")
        if chosen.response != row.response_id:
            what.append("choice")
        if verdict.reply != row.reply_text:
            what.append("reply")
        if verdict.status != row.status:
            what.append("status")
        effect_changes = _effect_changes(_recorded_plan(row), [e.to_json() for e in verdict.effects])
        if effect_changes:
            what.append("effects")
        if what:
            escalates = ((verdict.status == Status.ESCALATED or chosen.response == policy.fallback)
                         and row.status != Status.ESCALATED and row.response_id != policy.fallback)
            self.report.changes.append(TurnChange(
                row.id or 0, row.conversation_id, row.turn, step, f"{row.response_id} [{row.status}]",
                f"{chosen.response} [{verdict.status}]" + (f" ({outcome.error})" if outcome.error else ""), what,
                escalates, effect_changes))
        sent = verdict.sent
        if sent is None and verdict.effects:  # the reply the effects' results filled, as recorded if unchanged
            outcome_row = None if effect_changes else self.store.effects_outcome(row.id or 0)
            sent = outcome_row.sent_text if outcome_row is not None else verdict.reply
        if catalog[chosen.response].ends_conversation and verdict.status == Status.SENT:
            return END, sent
        return verdict.next_step, sent

    def _recorded_facts(self, row: Decision, schema: type[BaseModel]) -> BaseModel | None:
        try:
            recorded = json.loads(row.facts_json or "{}")
            recorded.pop(FOLLOW_UP_READINGS, None)
            recorded.pop(UNGROUNDED, None)
            recorded.pop(FIELD_PROBABILITIES, None)
            recorded.pop(MODEL_OUTPUT, None)
            return schema.model_validate(recorded)
        except (ValidationError, ValueError, AttributeError):
            return None

    @staticmethod
    def _recorded_readings(row: Decision) -> list[dict[str, Any]]:
        """The follow-up readings (``Turn.read``) recorded with a decision."""
        try:
            readings = json.loads(row.facts_json or "{}").get(FOLLOW_UP_READINGS) or []
        except (ValueError, AttributeError):
            return []
        return [r for r in readings if isinstance(r, dict)]


def _recorded_plan(row: Decision) -> list[dict[str, Any]]:
    """The actions the recorded decision planned for its chosen option (none for an escalated one)."""
    if row.status not in (Status.SENT, Status.PENDING) or row.chosen_index is None:
        return []
    try:
        options = json.loads(row.options_json or "[]")
        return list(options[row.chosen_index].get("effects") or [])
    except (ValueError, IndexError, AttributeError):
        return []


def _effect_changes(recorded: list[dict[str, Any]], replayed: list[dict[str, Any]]) -> list[str]:
    """``would no longer ...`` for each recorded action the replay does not plan, ``would now ...`` for
    each planned action the recording did not have (name and arguments compared)."""
    def key(effect: dict[str, Any]) -> str:
        return json.dumps([effect["name"], effect.get("arguments") or {}], sort_keys=True, default=str)

    before, after = {key(e): e for e in recorded}, {key(e): e for e in replayed}
    return ([f"would no longer {describe(e['name'], e.get('arguments') or {})}" for k, e in before.items()
             if k not in after]
            + [f"would now {describe(e['name'], e.get('arguments') or {})}" for k, e in after.items()
               if k not in before])


def replay(store: Store, policy: Policy, flt: AuditFilter | None = None,
           model_factory: Callable[[], DecisionModel] | None = None) -> ReplayReport:
    """Re-run the recorded conversations that ``flt`` selects (whole conversations) under ``policy``."""
    flt = flt or AuditFilter()
    conversation_ids: list[str] = []
    for row in select_rows(store, AuditFilter(**{**flt.__dict__, "kind": "decisions", "limit": None})):
        if row.conversation_id and row.conversation_id not in conversation_ids:
            conversation_ids.append(row.conversation_id)
    if flt.limit:
        conversation_ids = conversation_ids[:flt.limit]
    replayer = _Replayer(store, policy, model_factory)
    for cid in conversation_ids:
        conversation = store.get_conversation(cid)
        if conversation.policy_name != policy.name:
            replayer.report.skipped.append(f"{cid}: runs policy {conversation.policy_name}, not {policy.name}")
            continue
        replayer.conversation(store.transcript(cid))
    return replayer.report
