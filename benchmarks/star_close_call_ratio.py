"""STAR: how close a close call must be before the model reads the message again, side by side.

A close call (``adapter.settle_close_call``) is two best actions after a customer message whose
weights are within ``adapter.CLOSE_CALL_RATIO`` of each other; each costs one more reading (on the
twelfth session's full run, a case with one close-call reading took p50 2.5 s against 0.16 s for a
case with none). A ratio above the recorded run's reads a subset of its close calls, so with
``--reuse-recorded`` every variant here is answered from the recorded rows, without a model call:

    .venv/bin/python benchmarks/star_close_call_ratio.py star_full.cases.jsonl --limit-per-domain 0 --reuse-recorded
"""

from __future__ import annotations

from star_recorded import Variant, compare_variants

RATIOS = (0.6, 0.7, 0.8, 0.9)

VARIANTS = {f"close call within {ratio}": Variant(settle_close_calls=True, next_action={"close_call_ratio": ratio})
            for ratio in RATIOS}


def main() -> None:
    """Print accuracy and close-call readings at each ratio; ``--out``: as JSON."""
    compare_variants(__doc__.splitlines()[0], VARIANTS)


if __name__ == "__main__":
    main()
