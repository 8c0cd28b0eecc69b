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

from sopagent.eval.star.adapter import ANSWERED_THRESHOLD
from star_recorded import Variant, compare_live

NEVER = 2.0
"""A threshold no sum of probabilities reaches: the message reading alone never skips a question."""
THRESHOLDS = {"p >= 0.1 (before the tenth session)": 0.1,
              f"p >= {ANSWERED_THRESHOLD:g} (as the harness runs)": ANSWERED_THRESHOLD,
              "never (follow-up reading only)": NEVER}
VARIANTS = {name: Variant(next_action={"answered_threshold": p}) for name, p in THRESHOLDS.items()}


def main() -> None:
    """Print accuracy and follow-up reading cost of each threshold on the sample."""
    compare_live(__doc__.splitlines()[0], VARIANTS)


if __name__ == "__main__":
    main()
