"""STAR: before asking "anything else?", read whether the customer has just said there is nothing else.

In SAM's flowcharts a thank-you leads to ``anything_else`` and the answer "nothing else" leads to
the farewell; customers often say both at once ("thanks, that's all I needed"). Where the procedure
would ask ``anything_else`` after a customer message (and no close call was read), the model reads
the message once more between the kind of message that led there and the kind that answers it
(``adapter.settle_closing``, one lettered token); the farewell is taken above one half.

Measured in the twelfth session and not adopted (no signal; see BENCHMARKS.md). This script
decides a recorded run's cases again with the policy code with and without that reading, both with
the close-call reading as the harness runs it. The message readings are the
recorded ones; with ``--reuse-recorded`` the follow-up and close-call readings the recorded run made
in the same case are taken from its row, and only new ones are asked live:

    .venv/bin/python benchmarks/star_closing.py star_full.cases.jsonl --limit-per-domain 0 --reuse-recorded
"""

from __future__ import annotations

from star_recorded import Variant, compare_variants

VARIANTS = {"ask anything_else as the graph says (as the harness runs)": Variant(settle_close_calls=True),
            "closing read before anything_else": Variant(next_action={"read_closing": True},
                                                         settle_close_calls=True)}


def main() -> None:
    """Print accuracy and reading cost with and without the closing reading; ``--out``: as JSON."""
    compare_variants(__doc__.splitlines()[0], VARIANTS)


if __name__ == "__main__":
    main()
