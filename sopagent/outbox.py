"""The effect runner: runs a decision's planned actions once each, after the record, and chains the outcome.

A decision and its planned effects are committed together (``Store.append_turn``); an effect that
waits for approval is ``held`` until an operator approves (``planned``), overrides (the other
option's effects are planned) or escalates (``cancelled``). The runner then, for each effect in
order: claims it (one conditional update, so two runners never both run it), calls the backend
action with the effect's idempotency key, and writes the result to the outbox row at once. When the
decision's effects are all settled it appends one chained ``effects`` action holding every outcome
and the reply rendered from their results (or the policy's fallback when one failed, which hands the
conversation over). A runner that died mid-way is recovered by the next one (``sopagent effects
run``, or any agent starting): finished effects are not repeated, an effect left ``running`` past
its lease is called again with the same idempotency key, so an idempotent backend does it once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

from pydantic_core import to_jsonable_python
from sqlalchemy import update
from sqlmodel import Session, col, select

from sopagent.catalog import Catalog, parse_catalog
from sopagent.effects import actions_of
from sopagent.errors import ConversationError, PolicyError, SopAgentError
from sopagent.kernel import render_with_results
from sopagent.store import Conversation, Decision, OperatorAction, OutboxEffect, PolicyVersion, Store, utcnow
from sopagent.store.chain import commitment_of, row_hash
from sopagent.store.store import idempotency_key, runner_identity

RUNNER = "agent"
"""The name recorded on the chained ``effects`` actions the runner appends."""
LEASE_S = 60.0
"""An effect claimed longer ago than this by a runner that never finished it is run again."""


@dataclass(frozen=True)
class EffectsRun:
    """What running a decision's effects came to."""

    decision_id: int
    action: OperatorAction
    """The chained ``effects`` action."""
    reply: str | None
    """What the customer receives: the reply filled from the results, or the fallback."""
    failed: bool
    error: str | None = None
    """Why an action failed (personal data may be in it: it is chained only under the commitment)."""


class EffectRunner:
    """Runs the outbox's effects of one policy's conversations against that policy's backend tools."""

    def __init__(self, store: Store, tools: Any, fallback: str, lease_s: float = LEASE_S,
                 catalogs: Mapping[int, Catalog] | None = None) -> None:
        """
        Args:
            store: the audit store holding the outbox.
            tools: the backend whose :func:`~sopagent.effects.action` methods run the effects.
            fallback: the catalog response sent when an effect fails (a hand-off).
            lease_s: how long a claimed effect may run before another runner takes it over.
            catalogs: catalogs already loaded, by policy version id (others are read from the store).
        """
        self.store = store
        self.tools = tools
        self.fallback = fallback
        self.lease_s = lease_s
        self._catalogs: dict[int, Catalog] = dict(catalogs or {})

    def run_pending(self, policy_name: str | None = None) -> list[EffectsRun]:
        """Run every decision's effects that are due (recovery after a crash, or after approvals)."""
        done: list[EffectsRun] = []
        for decision_id in self.store.runnable_decisions(policy_name, self.lease_s):
            run = self.run_decision(decision_id)
            if run is not None:
                done.append(run)
        for decision_id in self._unrecorded(policy_name):
            run = self.run_decision(decision_id)
            if run is not None:
                done.append(run)
        return done

    def run_decision(self, decision_id: int, decision: Decision | None = None,
                     planned: list[OutboxEffect] | None = None) -> EffectsRun | None:
        """Run a decision's due effects in order and chain their outcome; None when nothing was due
        (already run, held for approval, or being run by another runner). ``decision`` and ``planned``
        (its outbox rows) save reading them again when the caller has just recorded them; rows it
        recorded already claimed by this process (``running``) are run without a second claim."""
        rows = [e for e in (planned if planned is not None else self.store.effects(decision_id))
                if e.status != "cancelled"]
        if not rows or any(e.status == "held" for e in rows) or all(e.outcome_action_id for e in rows):
            return None
        option_index = rows[0].option_index
        rows = [e for e in rows if e.option_index == option_index]
        decision = decision or self._decision(decision_id)
        if decision is None:
            return None
        specs = actions_of(self.tools)
        failed = False
        resolution = self.store.resolution(decision_id) if option_index != decision.chosen_index else None
        problems = {e.id: plan_problem(decision, e, resolution) for e in rows
                    if e.status not in ("done", "failed", "cancelled")}
        for position, effect in enumerate(rows):
            # An outcome is written at once when more effects follow (a runner that dies later repeats
            # none of them); the last one's goes into the transaction that chains them all.
            write_now = position < len(rows) - 1
            if effect.status in ("done", "failed", "cancelled"):
                failed = failed or effect.status == "failed"
                continue
            if failed:
                self._finish(effect, "cancelled", None, "an earlier effect of this decision failed", write_now)
                continue
            ours = planned is not None and effect.status == "running" and effect.claimed_by == runner_identity()
            if not ours and not self.store.claim_effect(effect, self.lease_s):
                return None  # another runner has it
            spec = specs.get(effect.name)
            try:
                if problems.get(effect.id):
                    raise PolicyError(f"refused to run {effect.name}: {problems[effect.id]}",
                                      fix="check who wrote to the effect or decision table; `sopagent audit verify`")
                if spec is None:
                    raise PolicyError(f"the backend has no action {effect.name!r}",
                                      fix="give the agent the tools object its policy was written for")
                result = spec.call(self.tools, json.loads(effect.arguments_json or "{}"), effect.idempotency_key)
                self._finish(effect, "done", to_jsonable_python(result), None, write_now)
            except Exception as exc:  # the backend refused or failed: recorded, the customer gets the fallback
                failed = True
                self._finish(effect, "failed", None, f"{type(exc).__name__}: {exc}", write_now)
        return self._record(decision, rows, failed)

    def _decision(self, decision_id: int) -> Decision | None:
        with self.store.session() as session:
            return session.get(Decision, decision_id)

    def _finish(self, effect: OutboxEffect, status: str, result: Any, error: str | None, write_now: bool) -> None:
        """An effect's outcome, on the row and, with ``write_now``, in the outbox at once."""
        effect.status = status
        effect.result_json = json.dumps(result, sort_keys=True) if result is not None else None
        effect.error = error
        effect.updated_at = utcnow()
        if not write_now:
            return
        with self.store.session() as session:
            session.execute(update(OutboxEffect).where(col(OutboxEffect.id) == effect.id).values(
                status=status, result_json=effect.result_json, error=error, updated_at=effect.updated_at))
            session.commit()

    def _record(self, decision: Decision, rows: list[OutboxEffect], failed: bool) -> EffectsRun | None:
        decision_id = decision.id or 0
        language = self.store.get_conversation(decision.conversation_id).language()
        catalog = self._catalog(decision.policy_version_id).in_language(language)
        views = json.loads(decision.options_json or "[]")
        view = views[rows[0].option_index] if rows[0].option_index < len(views) else None
        results = [json.loads(e.result_json) if e.result_json else None for e in rows]
        response_id = view["response_id"] if view else self.fallback
        reply: str | None
        error = next((e.error for e in rows if e.status == "failed"), None)
        if failed or view is None:
            response_id = self.fallback
            reply = catalog[self.fallback].render({}) if self.fallback in catalog else None
        else:
            try:
                reply = render_with_results(catalog, view, results)
            except (ValueError, SopAgentError) as exc:  # a result that does not fit its slot
                failed, error, response_id = True, f"{type(exc).__name__}: {exc}", self.fallback
                reply = catalog[self.fallback].render({}) if self.fallback in catalog else None
        detail = {"effects": [{"name": e.name, "idempotency_key": e.idempotency_key, "status": e.status}
                              for e in rows]}
        personal = {"arguments": [json.loads(e.arguments_json or "{}") for e in rows], "results": results,
                    "errors": [e.error for e in rows]}
        for _ in range(3):
            conversation = self.store.get_conversation(decision.conversation_id) if failed else None
            if conversation is not None:
                conversation.status = "escalated"
            action = OperatorAction(operator=RUNNER, action="effects", conversation_id=decision.conversation_id,
                                    decision_id=decision_id, response_id=response_id, created_at=utcnow(),
                                    reason=_summary(rows, failed),
                                    detail_json=json.dumps(detail, sort_keys=True),
                                    slots_json=json.dumps(personal, sort_keys=True, default=str), sent_text=reply)
            try:
                recorded = self._append_once(action, rows, conversation)
            except ConversationError as exc:
                if exc.retryable:
                    continue  # the conversation moved on meanwhile: reload and mark it again
                return None  # another runner recorded this outcome first
            return EffectsRun(decision_id, recorded, reply, failed, error)
        return None

    def _append_once(self, action: OperatorAction, rows: list[OutboxEffect],
                     conversation: Conversation | None) -> OperatorAction:
        def write(session: Session, row: OperatorAction) -> None:
            for effect in rows:  # only rows no other runner recorded: else this whole record rolls back
                written = session.execute(update(OutboxEffect).where(
                    col(OutboxEffect.id) == effect.id, col(OutboxEffect.outcome_action_id).is_(None)).values(
                    status=effect.status, result_json=effect.result_json, error=effect.error,
                    updated_at=effect.updated_at, outcome_action_id=row.id))
                if written.rowcount != 1:  # type: ignore[attr-defined]
                    raise ConversationError(f"the effects of decision {row.decision_id} were already recorded")
                effect.outcome_action_id = row.id

        return self.store.append_action(action, conversation, None, write)

    def _unrecorded(self, policy_name: str | None) -> list[int]:
        """Decisions with a finished effect whose outcome was never chained (a runner died before it)."""
        with self.store.session() as session:
            query = select(OutboxEffect.decision_id).where(
                col(OutboxEffect.outcome_action_id).is_(None), col(OutboxEffect.status).in_(("done", "failed")))
            if policy_name is not None:
                query = query.where(OutboxEffect.policy_name == policy_name)
            return sorted(set(session.exec(query).all()))

    def _catalog(self, version_id: int) -> Catalog:
        if version_id not in self._catalogs:
            with self.store.session() as session:
                version = session.get(PolicyVersion, version_id)
            if version is None:
                raise PolicyError(f"policy version {version_id} is missing from the audit store")
            self._catalogs[version_id] = parse_catalog(version.catalog_source,
                                                       f"<catalog of {version.name} {version.version}>")
        return self._catalogs[version_id]


def plan_problem(decision: Decision, effect: OutboxEffect, resolution: OperatorAction | None = None) -> str | None:
    """Why an outbox row is not the action its decision's sealed record planned (None when it is).

    The runner asks this before it runs anything, so a row whose arguments, name or key were changed
    in the database after the commit is refused; ``sopagent audit verify`` asks it of every row. An
    action of an option other than the chosen one needs an operator's override to that option.
    """
    if decision.erased_at is not None or effect.erased_at is not None:
        return None  # cleared by a recorded erasure: nothing left to compare
    if commitment_of(decision) != decision.commitment or row_hash(decision.prev_hash, decision) != decision.hash:
        return f"decision {decision.id}'s record no longer matches its seal (altered after the commit)"
    try:
        views = json.loads(decision.options_json or "[]")
        planned = views[effect.option_index]["effects"][effect.position]
    except (ValueError, IndexError, KeyError, TypeError):
        return f"decision {decision.id} planned no such action"
    arguments = json.loads(effect.arguments_json or "{}")
    if (planned.get("name"), planned.get("arguments"), bool(planned.get("irreversible"))) != (
            effect.name, arguments, effect.irreversible):
        return f"its name or arguments differ from what decision {decision.id} planned"
    if effect.idempotency_key != idempotency_key(decision, effect.option_index, effect.position):
        return f"its idempotency key is not decision {decision.id}'s"
    if effect.option_index != decision.chosen_index and (
            resolution is None or resolution.action != "override"
            or resolution.response_id != views[effect.option_index].get("response_id")):
        return f"it belongs to option {effect.option_index} of decision {decision.id}, which no operator chose"
    return None


def verify_outbox(store: Store) -> list[str]:
    """Every outbox row checked against its decision's sealed plan and, once run, its chained outcome."""
    problems: list[str] = []
    decisions: dict[int, Decision | None] = {}
    outcomes: dict[int, OperatorAction | None] = {}
    for effect in store.effects():
        if effect.decision_id not in decisions:
            with store.session() as session:
                decisions[effect.decision_id] = session.get(Decision, effect.decision_id)
        decision = decisions[effect.decision_id]
        where = f"action {effect.id} ({effect.name}) of decision {effect.decision_id}"
        if decision is None:
            problems.append(f"{where}: its decision is missing")
            continue
        resolution = store.resolution(decision.id or 0) if effect.option_index != decision.chosen_index else None
        problem = plan_problem(decision, effect, resolution)
        if problem:
            problems.append(f"{where}: {problem}")
        if effect.outcome_action_id is not None:
            if effect.outcome_action_id not in outcomes:
                with store.session() as session:
                    outcomes[effect.outcome_action_id] = session.get(OperatorAction, effect.outcome_action_id)
            outcome = outcomes[effect.outcome_action_id]
            listed = json.loads(outcome.detail_json or "{}").get("effects", []) if outcome is not None else []
            if outcome is None or outcome.action != "effects" or outcome.decision_id != effect.decision_id \
                    or {"name": effect.name, "idempotency_key": effect.idempotency_key,
                        "status": effect.status} not in listed:
                problems.append(f"{where}: its status {effect.status!r} is not what its chained outcome records")
    return problems


def _summary(rows: list[OutboxEffect], failed: bool) -> str:
    """The public line of an ``effects`` record: each action's name and status, never its error text
    (which may quote the customer's data; it is kept under the record's commitment)."""
    states = ", ".join(f"{e.name} {e.status}" for e in rows)
    return ("actions failed, fallback sent: " if failed else "actions done: ") + states
