"""Where a STAR follow-up reading's time goes: its prompt, or its decoded answer.

Re-asks the follow-up readings recorded in a run's cases JSONL (``follow_up_readings``), in the
run's order, on the backend's reading lane, and each one twice in a row:

* first as in the run: the lane's KV cache holds the previous reading's prompt, so the call
  evaluates the new dialogue lines and the question, then decodes the JSON answer;
* then the very same prompt again: it is all in the cache, so the call costs (almost) only the
  decoding of the answer.

The difference is the prompt's share. Both are measured side by side in one process; the answers
are checked to be the recorded ones (greedy decoding is deterministic).

    .venv/bin/python benchmarks/star_reading_cost.py star_full.cases.jsonl [DATA_DIR] [--readings 80]
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

from sopagent import prompts
from sopagent.eval.star.adapter import GivenAnswer
from sopagent.eval.star.runner import transcript
from star_recorded import load_recorded_run


def main() -> None:
    """Print the per-reading cost of the first ``--readings`` recorded follow-up readings."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases_file", help="a recorded run's cases JSONL with follow_up_readings per row")
    parser.add_argument("data_dir", nargs="?", default="data/star")
    parser.add_argument("--readings", type=int, default=80, help="how many readings to re-ask")
    parser.add_argument("--model", help="model spec (default: the embedded model)")
    args = parser.parse_args()
    from sopagent.models import load_model

    run = load_recorded_run(args.cases_file, args.data_dir)
    model: Any = load_model(args.model)
    lane = model.reading_lane() if callable(getattr(model, "reading_lane", None)) else model
    first: list[Any] = []
    again: list[Any] = []
    same = 0
    for case in run.cases:
        if len(first) >= args.readings:
            break
        context = prompts.transcript_text(transcript(case.history))
        for reading in run.rows[case.case_id].get("follow_up_readings") or []:
            prompt = prompts.reading_prompt(context, reading["question"])
            extraction = lane.extract(prompt, GivenAnswer)
            first.append(extraction.stats)
            again.append(lane.extract(prompt, GivenAnswer).stats)
            same += extraction.facts.model_dump() == reading["answer"]
    if not first:
        raise SystemExit(f"{args.cases_file} has no follow_up_readings rows (recorded before they were kept?)")

    def line(label: str, stats: list[Any]) -> str:
        ms = [s.ms for s in stats]
        new = [s.prompt_tokens - s.reused_tokens for s in stats]
        return (f"{label:<22} mean {statistics.fmean(ms):7.0f} ms  median {statistics.median(ms):7.0f} ms  "
                f"new prompt tokens {statistics.fmean(new):5.1f}  "
                f"decoded tokens {statistics.fmean(s.generated_tokens for s in stats):4.1f}")

    print(f"{len(first)} readings re-asked ({same} answers identical to the recorded run); model {lane.name}")
    print(line("as in the run", first))
    print(line("same prompt again", again))
    share = 1 - sum(s.ms for s in again) / sum(s.ms for s in first)
    print(f"prompt share of a reading's time: {share:.0%} (the rest is decoding the answer)")


if __name__ == "__main__":
    main()
