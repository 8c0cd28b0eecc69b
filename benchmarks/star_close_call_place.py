"""STAR: the close-call reading under the readings' own system text or under the policy's, side by side.

The close-call reading (``adapter.settle_close_call``) asks the model, between the two kinds of
customer message behind the two best actions, which one the latest message is closer to. Until the
twelfth session it was asked under the readings' own short system text on the reading lane, whose
cached prefix is the conversation as the last follow-up reading saw it: a close call there paid for
the dialogue's new lines again (p50 2.5 s a case on the twelfth session's full run, against 0.16 s
for a case with no second reading). Under the policy's system text, right after the step's own
reading, only the question is new to llama.cpp's cache. This script re-decides a recorded run's
cases both ways (message readings and follow-up readings from the run, ``--reuse-recorded``):

    .venv/bin/python benchmarks/star_close_call_place.py star_full.cases.jsonl --limit-per-domain 40 --reuse-recorded
"""

from __future__ import annotations

from star_recorded import Variant, compare_variants

VARIANTS = {"close calls under the readings' text": Variant(settle_close_calls=True),
            "close calls under the policy's text": Variant(settle_close_calls=True, close_calls_under_policy_text=True)}


def main() -> None:
    """Print accuracy and reading cost of both places of the close-call reading; ``--out``: as JSON."""
    compare_variants(__doc__.splitlines()[0], VARIANTS)


if __name__ == "__main__":
    main()
