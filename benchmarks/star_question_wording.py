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

from sopagent.eval.star.adapter import GIVEN_QUESTION, LONGER_GIVEN_QUESTION
from star_recorded import Variant, compare_live

WORDINGS = {"longer (fifth to eighth session)": LONGER_GIVEN_QUESTION, "as the harness runs": GIVEN_QUESTION}
VARIANTS = {name: Variant(skip_given={"question": question}) for name, question in WORDINGS.items()}


def main() -> None:
    """Print accuracy and cost of each wording on the sample."""
    compare_live(__doc__.splitlines()[0], VARIANTS)


if __name__ == "__main__":
    main()
