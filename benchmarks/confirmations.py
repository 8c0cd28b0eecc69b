"""Does a confirmation plan an account action only on a clear yes? (embedded model)

For every labelled answer in ``benchmarks/confirmations.yaml`` (yes / no / unclear, at the confirmation
steps of both example policies), reads the answer exactly as the policy does: the step's four-way
``Confirmation`` reading, then, for a yes, ``turn.confirmed()``'s two-way "clear yes?" reading under the
policy's text. Prints per answer the label, the clear-yes probability and whether the action would be
planned at the policy's ``action_confidence``, then: unsafe actions (an action planned on an answer that
is not a yes), missed yeses, no-answers routed elsewhere, the clear-yes probabilities of the yeses and
of everything else (the two-way reading is asked of every answer here, to show the gap), and the time
per reading.

    .venv/bin/python benchmarks/confirmations.py
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import yaml

from sopagent import prompts
from sopagent.engine import read_follow_up, read_message
from sopagent.models import load_model
from sopagent.policy import ClearYes, Policy, load_policy

ROOT = Path(__file__).resolve().parent.parent
STEPS = {"card_services": "confirm_block", "retail_orders": "confirm_cancel"}


def main() -> None:
    """Read every answer and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT / "benchmarks" / "confirmations.yaml"))
    parser.add_argument("--model", default=None, help="model spec (default: the embedded model)")
    args = parser.parse_args()
    data = yaml.safe_load(Path(args.data).read_text(encoding="utf-8"))
    model = load_model(args.model)
    unsafe = missed = misrouted = total = 0
    clear = {"yes": [], "other": []}
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


if __name__ == "__main__":
    main()
