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

from star_recorded import Variant, compare_variants

VARIANTS = {"one reading (before)": Variant(),
            "close calls read again (as the harness runs)": Variant(settle_close_calls=True)}


def main() -> None:
    """Print accuracy and reading cost with and without the close-call reading; ``--out``: as JSON."""
    compare_variants(__doc__.splitlines()[0], VARIANTS)


if __name__ == "__main__":
    main()
