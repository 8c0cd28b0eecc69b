"""STAR: settle a close call between the two best actions with a second, two-way reading, side by side.

After a customer message the procedure weighs each action by the reading's probability of the kinds
of message that lead to it, times the graph's prior (``adapter.score_actions``). Where the two best
weights are within ``adapter.CLOSE_CALL_RATIO`` of each other, the model is asked once more, between
only the two kinds of message behind them (``adapter.settle_close_call``, one lettered token), and
the second action is taken when the model gives its kind more than half the probability.

This script decides a recorded run's cases again with the policy code with and without that
reading. The message readings are the recorded ones; with ``--reuse-recorded`` a follow-up reading
the recorded run made in the same case (same question, same conversation, greedy decoding) is taken
from its row, and only the new ones are asked live, each variant on its own reading lane:

    .venv/bin/python benchmarks/star_close_calls.py star_full.cases.jsonl --limit-per-domain 40 --sample-offset 80 --reuse-recorded
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sopagent.eval.star.data import sample_cases
from star_recorded import Variant, load_recorded_run, redecide_side_by_side, report_side_by_side, sample_arguments

VARIANTS = {"one reading (before)": Variant(),
            "close calls read again (as the harness runs)": Variant(settle_close_calls=True)}


def main() -> None:
    """Print accuracy and follow-up reading cost with and without the close-call reading."""
    parser = sample_arguments(__doc__.splitlines()[0])
    parser.add_argument("--reuse-recorded", action="store_true",
                        help="answer follow-up readings the recorded run made from its rows; ask only new ones")
    parser.add_argument("--out", type=Path, help="write the figures of both variants here (JSON)")
    args = parser.parse_args()
    from sopagent.models import load_model

    run = load_recorded_run(args.cases_file, args.data_dir)
    cases = sample_cases(run.cases, args.limit_per_domain, args.sample_offset)
    model: Any = load_model(args.model)
    side_by_side = redecide_side_by_side(run, cases, model, VARIANTS, reuse_recorded=args.reuse_recorded)
    report_side_by_side(run, cases, side_by_side, args.out)


if __name__ == "__main__":
    main()
