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

from typing import Any

from sopagent.eval.star.adapter import ANSWERED_THRESHOLD
from sopagent.eval.star.data import sample_cases
from star_recorded import Variant, load_recorded_run, mean_accuracy, redecide_side_by_side, sample_arguments

NEVER = 2.0
"""A threshold no sum of probabilities reaches: the message reading alone never skips a question."""
THRESHOLDS = {"p >= 0.1 (before the tenth session)": 0.1,
              f"p >= {ANSWERED_THRESHOLD:g} (as the harness runs)": ANSWERED_THRESHOLD,
              "never (follow-up reading only)": NEVER}


def main() -> None:
    """Print accuracy and follow-up reading cost of each threshold on the sample."""
    args = sample_arguments(__doc__.splitlines()[0]).parse_args()
    from sopagent.models import load_model

    run = load_recorded_run(args.cases_file, args.data_dir)
    cases = sample_cases(run.cases, args.limit_per_domain, args.sample_offset)
    model: Any = load_model(args.model)
    variants = {name: Variant(next_action={"answered_threshold": p}) for name, p in THRESHOLDS.items()}
    side_by_side = redecide_side_by_side(run, cases, model, variants)
    recorded = {c.case_id: run.rows[c.case_id]["pred"] for c in cases}
    print(f"{len(cases)} cases (limit {args.limit_per_domain} per domain, offset {args.sample_offset}); "
          f"recorded run {mean_accuracy(cases, recorded):.1%}")
    for name in variants:
        calls, predictions = side_by_side.stats[name], side_by_side.predictions[name]
        differ = sum(predictions[k] != recorded[k] for k in recorded)
        print(f"{name:<34} accuracy {mean_accuracy(cases, predictions):6.1%}  readings {len(calls):4d}  "
              f"model time {sum(s.ms for s in calls) / 1000:6.1f} s  differ from the recorded run {differ}")
        per_domain: dict[str, list[bool]] = {}
        for case in cases:
            per_domain.setdefault(case.domain, []).append(predictions[case.case_id] == case.gold)
        print("    " + "  ".join(f"{d} {sum(v) / len(v):.1%}" for d, v in sorted(per_domain.items())))


if __name__ == "__main__":
    main()
