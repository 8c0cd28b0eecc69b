"""STAR: the graph's prior on the kinds of customer message, side by side, re-decided from a recorded run.

After a customer message each action's weight is P(kind) x prior, summed over the kinds that lead to
it (``adapter.score_actions``). The prior (``adapter.kind_weights``) is ``EXPECTED_WEIGHT`` for the
kinds that answer the agent's last action in SAM's graph and 1 for the others; ``CLOSING_WEIGHT``
raises the closing kinds (thanks, goodbye, nothing else) where they do not answer it, since a
customer may end the conversation at any point. The message readings are the recorded run's; new
close-call readings are asked live (or, with ``--no-close-calls --model none``, none at all):

    .venv/bin/python benchmarks/star_prior_weights.py star_full.cases.jsonl --limit-per-domain 0 --reuse-recorded
    .venv/bin/python benchmarks/star_prior_weights.py star_full.cases.jsonl --limit-per-domain 0 --reuse-recorded \\
        --no-close-calls --model none
"""

from __future__ import annotations

from star_recorded import Variant, compare_variants

from sopagent.eval.star.adapter import CLOSING_WEIGHT, EXPECTED_WEIGHT

EXPECTED_WEIGHTS = (16.0, 8.0, 4.0)
CLOSING_WEIGHTS = (2.0, 4.0, 8.0)

VARIANTS = {f"expected x{w:g}, closing x{CLOSING_WEIGHT:g}":
            Variant(settle_close_calls=True, next_action={"expected_weight": w}) for w in EXPECTED_WEIGHTS}
VARIANTS.update({f"expected x{EXPECTED_WEIGHT:g}, closing x{c:g}":
                 Variant(settle_close_calls=True, next_action={"closing_weight": c}) for c in CLOSING_WEIGHTS})


def main() -> None:
    """Print accuracy under each prior; ``--out``: as JSON."""
    compare_variants(__doc__.splitlines()[0], VARIANTS)


if __name__ == "__main__":
    main()
