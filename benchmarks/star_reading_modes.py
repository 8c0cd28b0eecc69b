"""STAR: what each kind of follow-up reading buys, side by side, re-decided from a recorded run.

A decision after a customer message reads the message (one letter among SAM's kinds), then may ask
the model twice more on the reading lane: a close-call reading (``adapter.settle_close_call``) and,
before asking the customer for a fact, a reading that looks for the answer in the conversation
(``adapter.skip_given``). Each is switched off here in turn; the recorded run's readings are reused,
so this needs no model:

    .venv/bin/python benchmarks/star_reading_modes.py star_full.cases.jsonl --limit-per-domain 0 --reuse-recorded --model none
"""

from __future__ import annotations

from star_recorded import Variant, compare_variants

VARIANTS = {
    "every reading (as the harness runs)": Variant(settle_close_calls=True),
    "no close-call reading": Variant(settle_close_calls=False),
    "no answer-looking reading": Variant(settle_close_calls=True, read_given=False),
    "the message reading only": Variant(settle_close_calls=False, read_given=False),
}


def main() -> None:
    """Print accuracy with and without each follow-up reading; ``--out``: as JSON."""
    compare_variants(__doc__.splitlines()[0], VARIANTS)


if __name__ == "__main__":
    main()
