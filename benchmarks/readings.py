"""How reliably a model reads what a customer means, on labelled messages (the embedded model unless --model).

* ``confirmations``: does a confirmation plan an account action only on a clear yes? For every labelled
  answer in ``benchmarks/confirmations.yaml`` (yes / no / unclear, at the confirmation steps of both
  example policies), reads the answer exactly as the policy does: the step's four-way ``Confirmation``
  reading, then, for a yes, ``turn.confirmed()``'s two-way "clear yes?" reading under the policy's text.
  Prints per answer the label, the clear-yes probability and whether the action would be planned at the
  policy's ``action_confidence``, then: unsafe actions (an action planned on an answer that is not a yes),
  missed yeses, no-answers routed elsewhere, the clear-yes probabilities of the yeses and of everything
  else (the two-way reading is asked of every answer here, to show the gap), and the time per reading.
* ``routing``: can a two-way reading tell a request for a person, or a complaint, from other first
  messages? For each message in ``MESSAGES`` (written for this benchmark, labelled complaint / person /
  other), reads the card-services request as the policy does (JSON: intent and hand-off), then asks two
  yes/no questions with ``Turn.check``'s reading (``YesNo`` under the policy's text): does the message ask
  for a person, does it make a complaint. Prints each message's readings and, per question, the
  probability range on messages of its own kind and on all others.

Run::

    .venv/bin/python benchmarks/readings.py confirmations [--data benchmarks/confirmations.yaml] [--model SPEC]
    .venv/bin/python benchmarks/readings.py routing [--model SPEC]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sopagent import prompts  # noqa: E402
from sopagent.engine import read_follow_up, read_message  # noqa: E402
from sopagent.models import load_model  # noqa: E402
from sopagent.policy import ClearYes, Policy, YesNo, load_policy  # noqa: E402

STEPS = {"card_services": "confirm_block", "retail_orders": "confirm_cancel"}
"""The confirmation step of each example policy whose answers ``confirmations`` reads."""


def measure_confirmations(args: argparse.Namespace) -> None:
    """``confirmations``: read every labelled answer to a confirmation and print the figures."""
    data = yaml.safe_load(Path(args.data).read_text(encoding="utf-8"))
    model = load_model(args.model)
    unsafe = missed = misrouted = total = 0
    clear: dict[str, list[float]] = {"yes": [], "other": []}
    timings: dict[str, list[float]] = {"four-way reading": [], "clear-yes reading": []}
    for policy_name, case in data.items():
        policy: Policy = load_policy(ROOT / "policies" / f"{policy_name}.py")
        schema = policy.steps[STEPS[policy_name]].facts
        system = prompts.system_text(policy.description)
        history = [(role, text) for role, text in case["before"]] + [("Agent", case["question"])]
        print(f"== {policy_name}, step {STEPS[policy_name]}, action_confidence {policy.action_confidence}")
        for gold, answers in case["answers"].items():
            for text in answers:
                context = prompts.conversation_text(history, text)
                started = time.perf_counter()
                facts = read_message(model, system, context, schema, text).facts
                timings["four-way reading"].append(time.perf_counter() - started)
                started = time.perf_counter()
                answer, _ = read_follow_up(model, context, ClearYes.question, ClearYes, system)
                timings["clear-yes reading"].append(time.perf_counter() - started)
                p_yes = answer.probabilities.get("yes", 0.0)
                acts = facts.label == "yes" and p_yes >= policy.action_confidence
                clear["yes" if gold == "yes" else "other"].append(p_yes)
                total += 1
                unsafe += acts and gold != "yes"
                missed += gold == "yes" and not acts
                misrouted += gold == "no" and facts.label != "no"
                mark = "ACT " if acts else "ask "
                print(f"  {gold:<8} read {facts.label:<8} clear-yes {p_yes:.2f}  {mark} {text}")
    print(f"\n{total} answers: {unsafe} unsafe actions, {missed} missed yeses, {misrouted} no-answers not read as no")
    for name, values in clear.items():
        print(f"clear-yes probability of {name:>5} answers: min {min(values):.2f}  max {max(values):.2f}  "
              f"median {np.median(values):.2f}")
    for name, values in timings.items():
        print(f"{name}: p50 {np.median(values) * 1000:.0f} ms  p95 {np.percentile(values, 95) * 1000:.0f} ms")


COMPLAINS = "Does the customer's latest message make a complaint about the bank or its service?"
ASKS_FOR_PERSON = "Does the customer's latest message ask to talk to a human person (an agent, staff, someone)?"
QUESTIONS = {"complaint": COMPLAINS, "person": ASKS_FOR_PERSON}
MESSAGES = {
    "complaint": ["I want to make a complaint about how I was treated in your branch",
                  "your staff were rude to me and I want to complain",
                  "I'm unhappy with the service, I want to file a complaint",
                  "this is the third time my card is charged twice, I want to complain",
                  "i wish to lodge a formal complaint"],
    "person": ["put me through to one of your staff", "get me a real human please, not a bot",
               "can i talk to someone real", "I want a person", "transfer me to an agent"],
    "other": ["could you open a savings account for me?", "that makes no sense", "thanks, that's all",
              "what's the weather tomorrow", "I lost my card", "hi"],
}
"""First messages for ``routing``, by what each one is."""


def measure_routing(args: argparse.Namespace) -> None:
    """``routing``: read every first message, ask both yes/no questions and print the probability ranges."""
    policy = load_policy(ROOT / "policies" / "card_services.py")
    assert COMPLAINS in policy.source_text, "the policy's complaint question changed; update this benchmark"
    schema = policy.steps["welcome"].facts
    system = prompts.system_text(policy.description)
    model = load_model(args.model)
    ranges: dict[str, dict[str, list[float]]] = {q: {"own": [], "other": []} for q in QUESTIONS}
    for kind, messages in MESSAGES.items():
        for text in messages:
            context = prompts.conversation_text([], text)
            facts = read_message(model, system, context, schema, text).facts
            shown = []
            for name, question in QUESTIONS.items():
                answer, _ = read_follow_up(model, context, question, YesNo, system)
                p_yes = answer.probabilities.get("yes", 0.0)
                ranges[name]["own" if name == kind else "other"].append(p_yes)
                shown.append(f"{name} {p_yes:.2f}")
            print(f"{kind:<9} JSON: {facts.intent:<20} {facts.handoff:<13} {'  '.join(shown)}  {text}")
    for name, split in ranges.items():
        print(f"{name}: own kind {min(split['own']):.2f}-{max(split['own']):.2f}, "
              f"every other message {min(split['other']):.2f}-{max(split['other']):.2f}")


def main() -> None:
    """Parse the command line and run one measurement."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    text = "does a confirmation plan an account action only on a clear yes? (labelled answers)"
    confirmations = commands.add_parser("confirmations", help=text, description=text)
    confirmations.add_argument("--data", default=str(ROOT / "benchmarks" / "confirmations.yaml"),
                               help="labelled answers (default: benchmarks/confirmations.yaml)")
    confirmations.add_argument("--model", default=None, help="model spec (default: the embedded model)")
    text = "can a two-way reading tell a request for a person, or a complaint, from other first messages?"
    routing = commands.add_parser("routing", help=text, description=text)
    routing.add_argument("--model", default=None, help="model spec (default: the embedded model)")
    args = parser.parse_args()
    measures: dict[str, Callable[[argparse.Namespace], None]] = {
        "confirmations": measure_confirmations, "routing": measure_routing}
    measures[args.command](args)


if __name__ == "__main__":
    main()
