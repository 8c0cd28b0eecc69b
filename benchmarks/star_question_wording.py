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

import argparse
import statistics
from typing import Any

from sopagent import prompts
from sopagent.eval.star import gate
from sopagent.eval.star.adapter import GIVEN_QUESTION, LONGER_GIVEN_QUESTION, GivenAnswer, next_action, skip_given
from sopagent.eval.star.data import sample_cases
from sopagent.eval.star.runner import transcript
from star_recorded import load_recorded_run, mean_accuracy

WORDINGS = {"longer (fifth to eighth session)": LONGER_GIVEN_QUESTION, "as the harness runs": GIVEN_QUESTION}


def main() -> None:
    """Print accuracy and cost of each wording on the sample."""
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
    first_lane = model.reading_lane()
    lanes = {name: lane for name, lane in zip(WORDINGS, (first_lane, first_lane.reading_lane()))}
    given: dict[str, dict[int, dict[str, str]]] = {name: {} for name in WORDINGS}
    predictions: dict[str, dict[str, str]] = {name: {} for name in WORDINGS}
    stats: dict[str, list[Any]] = {name: [] for name in WORDINGS}
    for number, case in enumerate(cases):
        task, row = run.tasks[case.task], run.rows[case.case_id]
        allowed = gate.allowed_actions(task, case.history)
        probabilities = row.get("kind_probabilities") or ({row["label"]: 1.0} if row["label"] else {})
        action = next_action(task, case.history, row["label"], probabilities, allowed)
        context = prompts.transcript_text(transcript(case.history))
        order = list(WORDINGS) if number % 2 == 0 else list(reversed(WORDINGS))
        for name in order:
            chosen = action
            if gate.last_kind(case.history) == "customer":
                def read(question: str, schema: type[GivenAnswer], name: str = name) -> GivenAnswer:
                    extraction = lanes[name].extract(prompts.reading_prompt(context, question), schema)
                    stats[name].append(extraction.stats)
                    return extraction.facts  # type: ignore[return-value]

                chosen = skip_given(task, action, allowed, read, given[name].setdefault(case.dialogue_id, {}),
                                    question=WORDINGS[name])
            predictions[name][case.case_id] = chosen
    recorded = {c.case_id: run.rows[c.case_id]["pred"] for c in cases}
    print(f"{len(cases)} cases (limit {args.limit_per_domain} per domain, offset {args.sample_offset}); "
          f"recorded run {mean_accuracy(cases, recorded):.1%}")
    for name in WORDINGS:
        calls = stats[name]
        new = [s.prompt_tokens - s.reused_tokens for s in calls]
        differ = sum(predictions[name][k] != recorded[k] for k in recorded)
        print(f"{name:<34} accuracy {mean_accuracy(cases, predictions[name]):6.1%}  readings {len(calls):4d}  "
              f"model time {sum(s.ms for s in calls) / 1000:6.1f} s  new prompt tokens {sum(new):6d} "
              f"(p50 {statistics.median(new) if new else 0:.0f} a reading)  "
              f"differ from the recorded run {differ}")


if __name__ == "__main__":
    main()
