"""One decision in plain words: step, facts, allowed options with probabilities, who chose, versions, latencies."""

from __future__ import annotations

import json

from sopagent.effects import describe, shown_slots
from sopagent.errors import ConversationError
from sopagent.grounding import facts_lines
from sopagent.policy import FOLLOW_UP_READINGS
from sopagent.status import Status
from sopagent.store import Conversation, Decision, OperatorAction, PolicyVersion, Store
from sopagent.store.chain import ChainRow


def summary_line(row: ChainRow) -> str:
    """One line of ``audit list``."""
    if isinstance(row, Decision):
        return (f"#{row.seq:<6} decision {row.id:<6} {row.created_at[:19]}  {row.conversation_id[:8]} "
                f"turn {row.turn:<3} {row.step} -> {row.response_id or '-'} [{row.status}] by {row.chosen_by}")
    target = f" decision {row.decision_id}" if row.decision_id else ""
    return (f"#{row.seq:<6} action   {row.id:<6} {row.created_at[:19]}  {(row.conversation_id or '-')[:8]} "
            f"{row.action}{target} by {row.operator}" + (f" -> {row.response_id}" if row.response_id else "")
            + (f" ({row.reason})" if row.reason else ""))


def explain_decision(store: Store, decision_id: int) -> str:
    """Why the agent said what it said at this decision, in plain words."""
    with store.session() as session:
        decision = session.get(Decision, decision_id)
        if decision is None:
            raise ConversationError(f"decision {decision_id} does not exist; list them with `sopagent audit list`")
        version = session.get(PolicyVersion, decision.policy_version_id)
        conversation = session.get(Conversation, decision.conversation_id)
    resolution = store.resolution(decision_id)
    lines = [f"Decision {decision.id} (chain position {decision.seq}), {decision.created_at}",
             f"  conversation {decision.conversation_id}, turn {decision.turn}"
             + (f", customer {conversation.customer_ref}" if conversation and conversation.customer_ref else "")]
    if version is not None:
        lines.append(f"  policy {version.name} {version.version} (stored version #{version.id}, "
                     f"source sha256 {version.source_sha256[:12]}, catalog sha256 {version.catalog_sha256[:12]}"
                     + (f", helper modules sha256 {version.modules_sha256[:12]}" if version.modules_sha256 else "")
                     + ")")
    lines.append(f"  model {decision.model_name}")
    if decision.erased_at:
        lines.append(f"  personal content erased at {decision.erased_at}: the customer's words, facts, options "
                     "and reply are gone; the public record below remains")
    else:
        lines.append(f"  the customer wrote: {decision.customer_text!r}")
    lines.append(f"  step {decision.step!r} then {decision.next_step!r}")
    if decision.facts_json:
        facts = json.loads(decision.facts_json)
        readings = facts.pop(FOLLOW_UP_READINGS, None) or []
        taken, *not_taken = facts_lines(facts)
        lines.append("  facts read from the message: " + taken)
        lines.extend(f"  {line}" for line in not_taken)
        for reading in readings:
            if "check" in reading:  # a check made in code, not a model reading
                lines.append(f"  the step checked {reading['check']}: {reading.get('answer')}")
            else:
                lines.append(f"  the step asked the model: {reading.get('question')!r} -> {reading.get('answer')!r}")
    options = json.loads(decision.options_json or "[]")
    if options:
        lines.append(f"  the policy allowed {len(options)} option{'s' if len(options) != 1 else ''}:")
        for index, option in enumerate(options):
            mark = "*" if index == decision.chosen_index else " "
            prob = option.get("probability")
            shown = "   n/a" if prob is None else f"{prob:6.1%}"
            bound = shown_slots(option.get("slots") or {}, option.get("effects") or [])
            slots = f" {json.dumps(bound, ensure_ascii=False)}" if bound else ""
            lines.append(f"   {mark} {shown}  {option['response_id']}{slots} -> {option['next_step']}")
            for effect in option.get("effects") or []:
                lines.append(f"              would do {describe(effect['name'], effect.get('arguments') or {})}"
                             + (" (irreversible)" if effect.get("irreversible") else ""))
    how = {"policy": "the policy (only one option was allowed)", "model": "the model",
           "fallback": "the fallback (something failed; handed to a person)",
           "none": "nobody (an operator held the conversation; the message was only recorded)"}
    chooser = how.get(decision.chosen_by, decision.chosen_by.replace("operator:", "operator "))
    lines.append(f"  chosen by {chooser}: {decision.response_id or '-'}"
                 + (f" with probability {decision.confidence:.1%}" if decision.confidence is not None else ""))
    lines.append(f"  status {decision.status}")
    if decision.reply_text and decision.reply_text != decision.sent_text:
        held = "reply held for approval" if decision.status == Status.PENDING else "reply, sent once its actions ran"
        lines.append(f"  {held}: {decision.reply_text!r}")
    if decision.sent_text:
        lines.append(f"  the customer received: {decision.sent_text!r}")
    if decision.error:
        lines.append(f"  error: {decision.error}")
    if resolution is not None:
        lines.append(_resolution(resolution))
    for effect in store.effects(decision_id):
        arguments = json.loads(effect.arguments_json) if effect.arguments_json else None
        what = describe(effect.name, arguments) if arguments is not None else f"{effect.name}(erased)"
        result = f" -> {effect.result_json}" if effect.result_json else ""
        failure = f" ({effect.error})" if effect.error else ""
        lines.append(f"  action {what}: {effect.status}{result}{failure}, {effect.updated_at}, "
                     f"idempotency key {effect.idempotency_key}")
    outcome = store.effects_outcome(decision_id)
    if outcome is not None and outcome.sent_text:
        lines.append(f"  after its actions the customer received: {outcome.sent_text!r}")
    latency = json.loads(decision.latency_json or "{}")
    if latency:
        lines.append("  latency ms: " + ", ".join(f"{k} {v:.1f}" for k, v in latency.items()))
    lines.append(f"  hash {decision.hash[:16]}, previous {decision.prev_hash[:16]}")
    return "\n".join(lines)


def _resolution(action: OperatorAction) -> str:
    text = f"  then {action.action} by operator {action.operator} at {action.created_at}"
    if action.response_id:
        text += f": sent {action.response_id}"
    if action.reason:
        text += f" (reason: {action.reason})"
    return text
