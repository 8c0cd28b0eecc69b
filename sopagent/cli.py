"""The ``sopagent`` command: chat, check, test.

Every command reads its settings (``--db``, ``--model``, ``--config``) as :mod:`sopagent.settings` says,
and builds what it runs through :mod:`sopagent.compose`.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from sopagent.errors import AuthoringError, SopAgentError
from sopagent.settings import add_setting_flags


def cmd_probe(args: argparse.Namespace) -> int:
    """Probe a policy's fact readings on the model."""
    from pathlib import Path

    from sopagent.compose import open_model
    from sopagent.probe import probe_file_for, run_probe
    from sopagent.settings import Settings

    model = open_model(Settings.from_args(args))
    return run_probe(str(probe_file_for(Path(args.target))), model, sys.stdout, args.at_least)


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
    from sopagent.settings import Settings

    return run_test_files(args.files, settings=Settings.from_args(args), repeat=args.repeat, db=args.db,
                          out=sys.stdout, select=args.k, explain=args.explain, jsonl=args.jsonl)


def cmd_supervise(args: argparse.Namespace) -> int:
    """The Textual operator console."""
    from sopagent.console.cli import run_supervise

    return run_supervise(args)


def cmd_effects_run(args: argparse.Namespace) -> int:
    """Run the effects recorded but never run (a process stopped between the commit and the run)."""
    from sopagent.compose import open_store
    from sopagent.outbox import EffectRunner
    from sopagent.policy import load_policy
    from sopagent.settings import Settings

    policy = load_policy(args.policy)
    store = open_store(Settings.from_args(args))
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

    def common(p: argparse.ArgumentParser, model: bool = True, confidence: bool = False) -> None:
        add_setting_flags(p, model=model, confidence=confidence)

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
    # chat, audit (list, show, export, verify, replay, erase), serve and keys, eval star
    from sopagent.audit import cli as audit_cli
    from sopagent.chat import cli as chat_cli
    from sopagent.eval.star import cli as star_cli
    from sopagent.server import cli as server_cli

    for module in (chat_cli, audit_cli, server_cli, star_cli):
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
