"""STAR: a follow-up reading's answer checked against the customer's own words, side by side.

Before the agent asks for a fact, a follow-up reading looks for the customer's answer
(``adapter.skip_given``). The model sometimes copies the agent's question, or a value from a
knowledge-base result, as the answer. Two checks in code, each off in the harness
(``adapter.answer_stands``): ``ANSWER_GROUNDING`` (an answer counts only when that share of its
words are words the customer wrote) and ``REJECT_ECHO`` (an answer that repeats the agent's question
and is mostly not the customer's words does not count). Re-decided from a recorded run (its message
and follow-up readings reused; with ``--model none`` a reading a variant adds is answered "not
given" and counted):

    .venv/bin/python benchmarks/star_grounded_answers.py star_full.cases.jsonl --limit-per-domain 0 --reuse-recorded --model none
"""

from __future__ import annotations

from star_recorded import Variant, compare_variants

SHARES = (None, 1 / 3, 0.5, 1.0)

VARIANTS = {("any answer (as the harness runs)" if share is None else f"grounded share >= {share:.2f}"):
            Variant(settle_close_calls=True, skip_given={"grounding": share}) for share in SHARES}
VARIANTS["echo of the question rejected"] = Variant(settle_close_calls=True, skip_given={"reject_echo": True})


def main() -> None:
    """Print accuracy under each check; ``--out``: as JSON."""
    compare_variants(__doc__.splitlines()[0], VARIANTS)


if __name__ == "__main__":
    main()
