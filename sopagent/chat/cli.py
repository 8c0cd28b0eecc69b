"""``sopagent chat``: talk to a policy as a customer, in a terminal or from a script on stdin."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from sopagent.effects import describe, shown_slots
from sopagent.errors import RunError
from sopagent.grounding import facts_lines
from sopagent.models.embedded import progress_printer
from sopagent.settings import add_setting_flags
from sopagent.status import Status


def register(sub: Any) -> None:
    """Add ``chat`` to the ``sopagent`` parser."""
    chat = sub.add_parser("chat", help="talk to a policy as a customer")
    chat.add_argument("policy", help="policy file, e.g. policies/card_services.py")
    add_setting_flags(chat, confidence=True)
    chat.add_argument("--explain", action="store_true", help="show step, facts, options and probabilities")
    chat.add_argument("--jsonl", action="store_true", help="print one JSON object per turn")
    chat.add_argument("--customer", help="customer reference stored with the conversation")
    chat.add_argument("--language", help="reply in this language of the catalog (e.g. de); default its first")
    chat.add_argument("--wait-operator", type=float, default=600.0, metavar="SECONDS",
                      help="at the end of input, wait this long for operators to settle pending replies")
    chat.set_defaults(func=cmd_chat)


def load_agent(args: argparse.Namespace) -> Any:
    """The agent the command's settings name, its model loaded and warmed for the policy."""
    from sopagent.compose import build_agent, open_model, open_store, warm_for
    from sopagent.models.spec import redact
    from sopagent.policy import load_policy
    from sopagent.settings import Settings

    settings = Settings.from_args(args)
    policy = load_policy(args.policy)
    store = open_store(settings)
    print(f"loading model{' ' + redact(settings.model) if settings.model else ''} ...", file=sys.stderr)
    model = open_model(settings, progress=progress_printer(sys.stderr))
    warm_for(model, policy)
    return build_agent(policy, settings, model=model, store=store)


def format_explain(result: Any) -> str:
    """The ``--explain`` block for one turn."""
    lines = [f"  step: {result.step} -> {result.next_step}   status: {result.status}   chosen by: {result.chosen_by}"]
    taken, *not_taken = facts_lines(result.facts)
    lines.append(f"  facts: {taken}")
    lines.extend(f"  {line}" for line in not_taken)
    lines.append("  allowed options:")
    for index, option in enumerate(result.options):
        mark = "*" if index == result.chosen_index else " "
        prob = "  n/a " if option.probability is None else f"{option.probability:6.1%}"
        shown = shown_slots(option.slots, option.effects)
        slots = f" {json.dumps(shown, ensure_ascii=False)}" if shown else ""
        lines.append(f"   {mark} {prob}  {option.response_id}{slots} -> {option.next_step}")
    for effect in result.effects:
        outcome = f" -> {json.dumps(effect['result'], ensure_ascii=False)}" if effect["result"] is not None else ""
        failure = f" ({effect['error']})" if effect["error"] else ""
        what = describe(effect["name"], effect["arguments"])
        lines.append(f"  effect: {what} [{effect['status']}]{outcome}{failure}")
    if result.error:
        lines.append(f"  error: {result.error}")
    lat = result.latency_ms
    lines.append("  latency ms: " + ", ".join(f"{k} {v:.1f}" for k, v in lat.items()))
    return "\n".join(lines)


def cmd_chat(args: argparse.Namespace) -> int:
    """Interactive (or scripted, from stdin) conversation with a policy."""
    from sopagent.chat.watcher import ResolutionWatcher

    agent = load_agent(args)
    conversation_id = agent.start(customer_ref=args.customer, language=args.language)
    interactive = sys.stdin.isatty() and not args.jsonl
    watcher = ResolutionWatcher(agent.store, sys.stdout, jsonl=args.jsonl, interactive=interactive,
                                run_effects=agent.effects.run_decision)
    watcher.follow(conversation_id)  # replies an operator sends after taking the conversation over
    if interactive:
        print(f"conversation {conversation_id} with policy {agent.policy.name} "
              f"(model {agent.model.name}); Ctrl-D to end.", file=sys.stderr)
    while True:
        if interactive:
            try:
                text = input("you> ")
            except EOFError:
                print(file=sys.stderr)
                break
        else:
            line = sys.stdin.readline()
            if not line:
                break
            text = line.rstrip("\n")
        if not text.strip():
            continue
        try:
            result = agent.respond(conversation_id, text)
        except RunError as exc:
            print(f"error: {exc}", file=sys.stderr)
            if args.jsonl:
                print(json.dumps({"error": str(exc), "reply": None}), flush=True)
            return 2
        if args.jsonl:
            watcher.say(json.dumps(result.to_json(), ensure_ascii=False))
        else:
            watcher.say(f"agent> {result.reply if result.reply is not None else '(waiting for an operator)'}")
            if args.explain:
                watcher.say(format_explain(result))
        if result.status == Status.PENDING and result.step != "awaiting_approval":
            watcher.watch(result.decision_id)
        if result.ended:
            break
        if interactive:  # the reply is on screen: the model reads the conversation while the customer types
            agent.prepare_next(conversation_id)
    if watcher.pending() and not watcher.wait(args.wait_operator):
        print(f"error: no operator settled the pending reply within {args.wait_operator:g} s; it stays in the "
              "approval queue (sopagent supervise)", file=sys.stderr)
    watcher.close()
    return 0


