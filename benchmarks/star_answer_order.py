"""STAR: after a question already answered, go on in SAM's order or in STAR's graph's, side by side.

When the customer has already given what the agent is about to ask, the procedure goes on to the
action after that answer (``adapter.after_answer``). Two flowcharts say what that is: SAM's (the
action after the kind of message that answers the question) and STAR's own graph (the action after
the question). They disagree in two tasks of the seven domains: ride_book (STAR asks destination,
then departure, then sends "I can also filter for ...", SAM asks departure, destination, then
queries) and hotel_service_request (hotel and name swapped).

This script decides a recorded run's cases again with the policy code under both orders. The
message readings are the recorded ones; with ``--reuse-recorded`` a follow-up question the recorded
run asked in the same case gets its recorded answer (same prompt, greedy decoding), and only the
new ones are asked live, each variant on its own reading lane. ``--limit-per-domain 0`` takes every
case of the run:

    .venv/bin/python benchmarks/star_answer_order.py star_full.cases.jsonl --limit-per-domain 0 --reuse-recorded
"""

from __future__ import annotations

from star_recorded import Variant, compare_variants

VARIANTS = {"STAR's graph (before)": Variant(next_action={"sam_order": False}, skip_given={"sam_order": False}),
            "SAM's order (adopted)": Variant()}


def main() -> None:
    """Print accuracy and follow-up reading cost each order; ``--out`` writes them as JSON."""
    compare_variants(__doc__.splitlines()[0], VARIANTS)


if __name__ == "__main__":
    main()
