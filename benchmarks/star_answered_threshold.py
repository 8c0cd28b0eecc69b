"""STAR: skip a question on the message reading alone, or only on the follow-up reading, side by side.

Before the agent asks the customer for a fact, two rules may skip the question:

* ``skip_answered`` (no model call): the message reading gives the kinds of message that answer the
  question at least ``ANSWERED_THRESHOLD`` of probability (0.1 until the tenth session, chosen before
  the follow-up reading existed; 0.2 since, on this script's figures);
* ``skip_given`` (one short JSON reading): the model finds the customer's answer in the conversation.

This script decides a sample of a recorded run's cases again with the policy code under several
thresholds for the first rule (``never``: only the follow-up reading decides). The message readings
are the recorded ones; the follow-up readings are asked live, each variant on its own reading lane
of the same weights, in alternating order:

    .venv/bin/python benchmarks/star_answered_threshold.py star_full.cases.jsonl --limit-per-domain 40 --sample-offset 80
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

from sopagent import prompts
from sopagent.eval.star import gate
from sopagent.eval.star.adapter import ANSWERED_THRESHOLD, GivenAnswer, next_action, skip_given
from sopagent.eval.star.data import sample_cases
from sopagent.eval.star.runner import transcript
from star_recorded import load_recorded_run, mean_accuracy

NEVER = 2.0
"""A threshold no sum of probabilities reaches: the message reading alone never skips a question."""
VARIANTS = {"p >= 0.1 (before the tenth session)": 0.1,
            f"p >= {ANSWERED_THRESHOLD:g} (as the harness runs)": ANSWERED_THRESHOLD,
            "never (follow-up reading only)": NEVER}


def main() -> None:
    """Print accuracy and follow-up reading cost of each threshold on the sample."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases_file", help="a recorded run's cases JSONL (kind_probabilities per row)")
    parser.add_argument("data_dir", nargs="?", default="../shared/data/star")
    parser.add_argument("--limit-per-domain", type=int, default=40)
    parser.add_argument("--sample-offset", type=int, default=0)
    parser.add_argument("--model", help="model spec (default: the embedded model)")
    args = parser.parse_args()
    from sopagent.models import load_model

    run = load_recorded_run(args.cases_file, args.data_dir)
    cases = sample_cases(run.cases, args.limit_per_domain, args.sample_offset)
    model: Any = load_model(args.model)
    lanes: dict[str, Any] = {}
    lane = model.reading_lane()
    for name in VARIANTS:
        lanes[name] = lane
        lane = lane.reading_lane()
    given: dict[str, dict[int, dict[str, str]]] = {name: {} for name in VARIANTS}
    predictions: dict[str, dict[str, str]] = {name: {} for name in VARIANTS}
    stats: dict[str, list[Any]] = {name: [] for name in VARIANTS}
    for number, case in enumerate(cases):
        task, row = run.tasks[case.task], run.rows[case.case_id]
        allowed = gate.allowed_actions(task, case.history)
        probabilities = row.get("kind_probabilities") or ({row["label"]: 1.0} if row["label"] else {})
        context = prompts.transcript_text(transcript(case.history))
        order = list(VARIANTS) if number % 2 == 0 else list(reversed(VARIANTS))
        for name in order:
            chosen = next_action(task, case.history, row["label"], probabilities, allowed,
                                 answered_threshold=VARIANTS[name])
            if gate.last_kind(case.history) == "customer":
                def read(question: str, schema: type[GivenAnswer], name: str = name) -> GivenAnswer:
                    extraction = lanes[name].extract(prompts.reading_prompt(context, question), schema)
                    stats[name].append(extraction.stats)
                    return extraction.facts  # type: ignore[return-value]

                chosen = skip_given(task, chosen, allowed, read, given[name].setdefault(case.dialogue_id, {}))
            predictions[name][case.case_id] = chosen
    recorded = {c.case_id: run.rows[c.case_id]["pred"] for c in cases}
    print(f"{len(cases)} cases (limit {args.limit_per_domain} per domain, offset {args.sample_offset}); "
          f"recorded run {mean_accuracy(cases, recorded):.1%}")
    for name in VARIANTS:
        calls = stats[name]
        differ = sum(predictions[name][k] != recorded[k] for k in recorded)
        print(f"{name:<34} accuracy {mean_accuracy(cases, predictions[name]):6.1%}  readings {len(calls):4d}  "
              f"model time {sum(s.ms for s in calls) / 1000:6.1f} s  differ from the recorded run {differ}")
        per_domain = {}
        for case in cases:
            per_domain.setdefault(case.domain, []).append(predictions[name][case.case_id] == case.gold)
        print("    " + "  ".join(f"{d} {sum(v) / len(v):.1%}" for d, v in sorted(per_domain.items())))


if __name__ == "__main__":
    main()
