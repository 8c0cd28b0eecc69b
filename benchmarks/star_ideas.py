"""Re-score recorded STAR model readings under variants of the procedure (no model call).

A model run (``sopagent eval star``) keeps, per case, the probability the model gave every kind of
customer message. This script replays the policy code on those readings with other settings, so
an idea about the procedure is measured on the same fixed sample in seconds:

    .venv/bin/python benchmarks/star_ideas.py star_40.cases.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from sopagent.eval.star import gate
from sopagent.eval.star.adapter import next_action
from sopagent.eval.star.data import load_cases, load_tasks, sample_cases


def main() -> None:
    """Print mean-over-domains accuracy per variant."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases_file")
    parser.add_argument("data_dir", nargs="?", default="../shared/data/star")
    args = parser.parse_args()
    data = Path(args.data_dir)
    tasks = load_tasks(data)
    rows = {r["case_id"]: r for r in map(json.loads, Path(args.cases_file).read_text().splitlines()) if r}
    every_case = load_cases(data, tasks)
    tuning = {c.case_id for offset in (0, 40) for c in sample_cases(every_case, 40, offset)}
    cases = [c for c in every_case if c.case_id in rows]

    def uniform(task):
        return {n: 1.0 / len(task.user_nodes) for n in task.user_nodes}

    variants = {
        "recorded run": lambda case, task, row, allowed: row["pred"],
        "procedure only (uniform reading)": lambda c, t, r, a: next_action(t, c.history, None, uniform(t), a),
        "model argmax, no prior": lambda c, t, r, a: next_action(
            t, c.history, r["label"], {r["label"]: 1.0} if r["label"] else {}, a, 1.0),
    }
    for weight in (1.0, 2.0, 4.0, 8.0, 16.0):
        variants[f"model probabilities x prior {weight:g}"] = (
            lambda c, t, r, a, w=weight: next_action(t, c.history, r["label"], r.get("kind_probabilities") or {}, a, w))
    for weight in (4.0, 16.0):
        variants[f"prior {weight:g}, first reply from the reading"] = (
            lambda c, t, r, a, w=weight: next_action(t, c.history, r["label"], r.get("kind_probabilities") or {}, a, w,
                                                     greet_first=False))
    for threshold in (0.05, 0.1, 0.15, 0.2, 0.25, 0.3):
        variants[f"prior 16, answered at p >= {threshold:g}"] = (
            lambda c, t, r, a, th=threshold: next_action(t, c.history, r["label"], r.get("kind_probabilities") or {},
                                                        a, answered_threshold=th))
    print(f"{len(cases)} cases, {len({c.domain for c in cases})} domains, "
          f"{sum(c.case_id in tuning for c in cases)} of them in the two samples where settings are chosen")
    for name, predict in variants.items():
        per_part: dict[str, dict[str, list[bool]]] = {"samples": {}, "held out": {}}
        for case in cases:
            task = tasks[case.task]
            allowed = gate.allowed_actions(task, case.history)
            part = per_part["samples" if case.case_id in tuning else "held out"]
            part.setdefault(case.domain, []).append(predict(case, task, rows[case.case_id], allowed) == case.gold)
        figures = [f"{label} {statistics.fmean(sum(v) / len(v) for v in part.values()):6.1%}"
                   for label, part in per_part.items() if part]
        print(f"{name:<40} mean accuracy  " + "  ".join(figures))


if __name__ == "__main__":
    main()
