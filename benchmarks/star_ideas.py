"""Re-score recorded STAR model readings under variants of the procedure (no model call).

A model run (``sopagent eval star``) keeps, per case, the probability the model gave every kind of
customer message. This script replays the policy code on those readings with other settings, so
an idea about the procedure is measured on the same fixed sample in seconds:

    .venv/bin/python benchmarks/star_ideas.py star_40.cases.jsonl
"""

from __future__ import annotations

import argparse

from sopagent.eval.star import gate
from sopagent.eval.star.adapter import next_action
from star_recorded import load_recorded_run, split_figures


def main() -> None:
    """Print mean-over-domains accuracy per variant."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases_file")
    parser.add_argument("data_dir", nargs="?", default="data/star")
    args = parser.parse_args()
    run = load_recorded_run(args.cases_file, args.data_dir)
    tasks, rows, cases = run.tasks, run.rows, run.cases

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
          f"{sum(c.case_id in run.tuning for c in cases)} of them in the two samples where settings are chosen")
    for name, predict in variants.items():
        predictions = {c.case_id: predict(c, tasks[c.task], rows[c.case_id], gate.allowed_actions(tasks[c.task], c.history))
                       for c in cases}
        print(f"{name:<40} mean accuracy  {split_figures(run, predictions)}")

if __name__ == "__main__":
    main()
