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

import json
from pathlib import Path
from typing import Any

from sopagent.eval.star.data import Case, sample_cases
from sopagent.eval.star.metrics import weighted_f1
from star_recorded import Variant, load_recorded_run, mean_accuracy, redecide_side_by_side, sample_arguments, split_figures

VARIANTS = {"STAR's graph (before)": Variant(next_action={"sam_order": False}, skip_given={"sam_order": False}),
            "SAM's order (as the harness runs)": Variant()}


def domain_figures(cases: list[Case], predictions: dict[str, str], allowed: dict[str, list[str]]) -> dict[str, Any]:
    """Per domain: cases, accuracy, weighted F1 and violations (a prediction outside the allowed set)."""
    by_domain: dict[str, list[Case]] = {}
    for case in cases:
        by_domain.setdefault(case.domain, []).append(case)
    figures: dict[str, Any] = {}
    for domain, group in sorted(by_domain.items()):
        gold = [c.gold for c in group]
        pred = [predictions[c.case_id] for c in group]
        figures[domain] = {"cases": len(group), "accuracy": sum(g == p for g, p in zip(gold, pred)) / len(group),
                           "weighted_f1": weighted_f1(gold, pred),
                           "violations": sum(predictions[c.case_id] not in allowed[c.case_id] for c in group)}
    return figures


def main() -> None:
    """Print accuracy and follow-up reading cost of each order; ``--out`` writes them as JSON."""
    parser = sample_arguments(__doc__.splitlines()[0])
    parser.add_argument("--reuse-recorded", action="store_true",
                        help="answer follow-up questions the recorded run asked from its rows; ask only new ones")
    parser.add_argument("--out", type=Path, help="write the figures of both orders here (JSON)")
    args = parser.parse_args()
    from sopagent.models import load_model

    run = load_recorded_run(args.cases_file, args.data_dir)
    cases = sample_cases(run.cases, args.limit_per_domain, args.sample_offset)
    model: Any = load_model(args.model)
    side_by_side = redecide_side_by_side(run, cases, model, VARIANTS, reuse_recorded=args.reuse_recorded)
    recorded = {c.case_id: run.rows[c.case_id]["pred"] for c in cases}
    allowed = {c.case_id: run.rows[c.case_id]["allowed"] for c in cases}
    print(f"{len(cases)} cases (limit {args.limit_per_domain or 'none'} per domain, offset {args.sample_offset}); "
          f"recorded run {mean_accuracy(cases, recorded):.1%}")
    document: dict[str, Any] = {"cases": len(cases), "cases_file": args.cases_file.name, "variants": {}}
    for name in VARIANTS:
        calls, predictions = side_by_side.stats[name], side_by_side.predictions[name]
        differ = sum(predictions[k] != recorded[k] for k in recorded)
        figures = domain_figures(cases, predictions, allowed)
        print(f"{name:<34} accuracy {mean_accuracy(cases, predictions):6.1%}  ({split_figures(run, predictions)})  "
              f"live readings {len(calls):4d} ({sum(s.ms for s in calls) / 1000:6.1f} s)  "
              f"reused {side_by_side.reused[name]:4d}  differ from the recorded run {differ}")
        print("    " + "  ".join(f"{d} {f['accuracy']:.1%}" for d, f in figures.items()))
        document["variants"][name] = {
            "mean_accuracy": mean_accuracy(cases, predictions),
            "mean_weighted_f1": sum(f["weighted_f1"] for f in figures.values()) / len(figures),
            "violations": sum(f["violations"] for f in figures.values()),
            "live_readings": len(calls), "reused_readings": side_by_side.reused[name],
            "differ_from_recorded": differ, "domains": figures}
    if args.out:
        args.out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
