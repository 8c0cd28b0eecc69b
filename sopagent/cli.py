"""The ``sopagent`` command: chat, check, test.

Every command that touches the audit store takes ``--db URL`` and otherwise reads ``$SOPAGENT_DB``
(default: the SQLite file ``sopagent.db`` in the current folder).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Sequence

from sopagent.effects import describe, shown_slots
from sopagent.errors import AuthoringError, RunError, SopAgentError
from sopagent.grounding import facts_lines
from sopagent.models.base import WarmableModel
from sopagent.models.embedded import progress_printer
from sopagent.status import Status


def _load_agent(args: argparse.Namespace) -> Any:
    from sopagent.engine import Agent
    from sopagent.models import load_model
    from sopagent.policy import load_policy
    from sopagent.store import Store

    policy = load_policy(args.policy)
    store = Store(args.db)
    from sopagent.models.spec import agent_settings, redact

    config = getattr(args, "config", None)
    settings = agent_settings(config)
    print(f"loading model{' ' + redact(args.model) if args.model else ''} ...", file=sys.stderr)
    model = load_model(args.model, progress=progress_printer(sys.stderr), config=config)
    if isinstance(model, WarmableModel):
        model.warm([step.facts for step in policy.steps.values() if step.facts.model_fields])
    confidence = args.confidence if args.confidence is not None else settings.get("confidence_threshold")
    return Agent(policy, model, store, confidence_threshold=confidence,
                 approve_when_confidence_unknown=settings.get("approve_when_confidence_unknown"))


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


def cmd_probe(args: argparse.Namespace) -> int:
    """Probe a policy's fact readings on the model."""
    from pathlib import Path

    from sopagent.models import load_model
    from sopagent.probe import probe_file_for, run_probe

    return run_probe(str(probe_file_for(Path(args.target))), load_model(args.model), sys.stdout, args.at_least)


def cmd_new(args: argparse.Namespace) -> int:
    """Create a new policy laid out like the examples."""
    from sopagent.scaffold import create_policy

    written = create_policy(args.name, args.dir)
    for path in written:
        print(f"created {path}")
    policy, tests = written[0], written[-1]
    print(f"next: sopagent check {policy}\n      sopagent test {tests} --model echo   # no language model\n"
          f"      sopagent test {tests}                # the embedded model\n      sopagent chat {policy}")
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    """Interactive (or scripted, from stdin) conversation with a policy."""
    from sopagent.waiting import ResolutionWatcher

    agent = _load_agent(args)
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


def cmd_check(args: argparse.Namespace) -> int:
    """Static validation of policies and their catalogs."""
    from sopagent.check import check_policy_file

    failed = 0
    for path in args.policies:
        problems = check_policy_file(path)
        if problems:
            failed += 1
            print(f"FAIL {path}")
            for problem in problems:
                print(f"  {problem}")
        else:
            print(f"ok   {path}")
    return 1 if failed else 0


def cmd_test(args: argparse.Namespace) -> int:
    """Run conversation test files."""
    from sopagent.convtest import run_test_files

    return run_test_files(args.files, model_path=args.model, repeat=args.repeat, db=args.db,
                          out=sys.stdout, select=args.k, explain=args.explain, jsonl=args.jsonl)


def cmd_supervise(args: argparse.Namespace) -> int:
    """The Textual operator console."""
    from sopagent.console.cli import run_supervise

    return run_supervise(args)


def cmd_effects_run(args: argparse.Namespace) -> int:
    """Run the effects recorded but never run (a process stopped between the commit and the run)."""
    from sopagent.outbox import EffectRunner
    from sopagent.policy import load_policy
    from sopagent.store import Store

    policy = load_policy(args.policy)
    store = Store(args.db)
    runner = EffectRunner(store, policy.make_tools(), policy.fallback)
    due = store.runnable_decisions(policy.name, runner.lease_s)
    print(f"{len(due)} decision(s) of policy {policy.name} with actions to run", file=sys.stderr)
    runs = runner.run_pending(policy.name)
    for run in runs:
        detail = json.loads(run.action.detail_json)["effects"]
        done = ", ".join(f"{e['name']} [{e['status']}]" for e in detail)
        escalated = " -> fallback sent, conversation escalated" if run.failed else ""
        print(f"decision {run.decision_id}: {done}{escalated}")
    failed = sum(run.failed for run in runs)
    print(f"{len(runs)} decision(s) settled, {failed} with a failed action", file=sys.stderr)
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(prog="sopagent", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, model: bool = True) -> None:
        p.add_argument("--db", help="audit store URL (default $SOPAGENT_DB or sqlite:///sopagent.db)")
        if model:
            p.add_argument("--model", help="model spec, e.g. PATH.gguf, openai:gpt-4.1-mini, "
                           "vllm:http://host:8000/v1#NAME (default $SOPAGENT_MODEL, then sopagent.toml, "
                           "then the embedded model)")

    chat = sub.add_parser("chat", help="talk to a policy as a customer")
    chat.add_argument("policy", help="policy file, e.g. policies/card_services.py")
    common(chat)
    chat.add_argument("--explain", action="store_true", help="show step, facts, options and probabilities")
    chat.add_argument("--jsonl", action="store_true", help="print one JSON object per turn")
    chat.add_argument("--customer", help="customer reference stored with the conversation")
    chat.add_argument("--language", help="reply in this language of the catalog (e.g. de); default its first")
    chat.add_argument("--confidence", type=float, default=None,
                      help="model choices below this probability wait for an operator")
    chat.add_argument("--wait-operator", type=float, default=600.0, metavar="SECONDS",
                      help="at the end of input, wait this long for operators to settle pending replies")
    chat.add_argument("--config", help="config file with [model] and [agent] tables (default ./sopagent.toml)")
    chat.set_defaults(func=cmd_chat)

    probe = sub.add_parser("probe", help="how often the model reads each fact right, from examples beside a policy")
    probe.add_argument("target", help="a policy file (its examples in POLICY.probe.yaml beside it) or a probe file")
    common(probe)
    probe.add_argument("--at-least", type=float, default=0.9, help="flag fields read right less often (default 0.9)")
    probe.set_defaults(func=cmd_probe)

    new = sub.add_parser("new", help="create a new policy with its catalog, demo backend and tests")
    new.add_argument("name", help="policy name, e.g. member_services")
    new.add_argument("--dir", default=".", help="folder to create it in (default: here)")
    new.set_defaults(func=cmd_new)

    check = sub.add_parser("check", help="validate policies and catalogs without a model")
    check.add_argument("policies", nargs="+")
    check.set_defaults(func=cmd_check)

    test = sub.add_parser("test", help="run conversation tests (exact assertions)")
    test.add_argument("files", nargs="+")
    common(test)
    test.add_argument("--repeat", type=int, default=1, help="run each test K times (pass^k)")
    test.add_argument("-k", metavar="PATTERN", help="run only the tests whose name contains PATTERN")
    test.add_argument("--explain", action="store_true",
                      help="show each turn's reply, facts with probabilities, latency")
    test.add_argument("--jsonl", action="store_true", help="one JSON object per turn (then the summary)")
    test.set_defaults(func=cmd_test)

    effects = sub.add_parser("effects", help="the actions decisions planned: run the ones a stopped process left")
    effects_sub = effects.add_subparsers(dest="effects_command", required=True)
    run = effects_sub.add_parser("run", help="run every planned or released action that has not run (each once)")
    run.add_argument("policy", help="the policy file whose backend runs them, e.g. policies/card_services.py")
    common(run, model=False)
    run.set_defaults(func=cmd_effects_run)

    supervise = sub.add_parser("supervise", help="operator console: watch, approve, take over, audit")
    common(supervise)
    supervise.add_argument("--operator", help="your name, recorded on every action (default: login name)")
    supervise.add_argument("--policies", default="policies", help="folder listed by 'try a policy'")
    supervise.add_argument("--poll", type=float, default=1.0, help="seconds between database polls")
    supervise.set_defaults(func=cmd_supervise)

    # commands with their own module, each registered by its `register(sub)` (their imports stay lazy):
    # audit (list, show, export, verify, replay, erase), serve and keys, eval star
    from sopagent.audit import cli as audit_cli
    from sopagent.eval.star import cli as star_cli
    from sopagent.server import cli as server_cli

    for module in (audit_cli, server_cli, star_cli):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sopagent`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except AuthoringError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SopAgentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
