"""Two wordings of the STAR follow-up reading side by side, on the message readings of a recorded run.

A recorded run (``sopagent eval star``) keeps every case's message reading (the probability of each
kind of customer message). This script decides a sample of those cases again with the policy code:
the message readings are the recorded ones, and the follow-up readings ("has the customer already
given what the agent is about to ask?") are asked live, once per wording, each wording on its own
llama.cpp reading lane (so each pays its own catch-up of the dialogue, as in a run), alternating
which goes first. It prints, per wording, the mean accuracy over domains, the readings asked, their
model time and the new prompt tokens they evaluated:

    .venv/bin/python benchmarks/star_question_wording.py star_full.cases.jsonl --limit-per-domain 40 --sample-offset 80
"""

from __future__ import annotations

import statistics
from typing import Any

from sopagent.eval.star.adapter import GIVEN_QUESTION, LONGER_GIVEN_QUESTION
from sopagent.eval.star.data import sample_cases
from star_recorded import Variant, load_recorded_run, mean_accuracy, redecide_side_by_side, sample_arguments

WORDINGS = {"longer (fifth to eighth session)": LONGER_GIVEN_QUESTION, "as the harness runs": GIVEN_QUESTION}


def main() -> None:
    """Print accuracy and cost of each wording on the sample."""
    args = sample_arguments(__doc__.splitlines()[0]).parse_args()
    from sopagent.models import load_model

    run = load_recorded_run(args.cases_file, args.data_dir)
    cases = sample_cases(run.cases, args.limit_per_domain, args.sample_offset)
    model: Any = load_model(args.model)
    variants = {name: Variant(skip_given={"question": question}) for name, question in WORDINGS.items()}
    side_by_side = redecide_side_by_side(run, cases, model, variants)
    recorded = {c.case_id: run.rows[c.case_id]["pred"] for c in cases}
    print(f"{len(cases)} cases (limit {args.limit_per_domain} per domain, offset {args.sample_offset}); "
          f"recorded run {mean_accuracy(cases, recorded):.1%}")
    for name in variants:
        calls, predictions = side_by_side.stats[name], side_by_side.predictions[name]
        new = [s.prompt_tokens - s.reused_tokens for s in calls]
        differ = sum(predictions[k] != recorded[k] for k in recorded)
        print(f"{name:<34} accuracy {mean_accuracy(cases, predictions):6.1%}  readings {len(calls):4d}  "
              f"model time {sum(s.ms for s in calls) / 1000:6.1f} s  new prompt tokens {sum(new):6d} "
              f"(p50 {statistics.median(new) if new else 0:.0f} a reading)  "
              f"differ from the recorded run {differ}")


if __name__ == "__main__":
    main()
