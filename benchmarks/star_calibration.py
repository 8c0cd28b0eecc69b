"""Contextual calibration of the STAR readings, re-scored from a recorded run (measured, not adopted).

The idea (Zhao et al. 2021, "Calibrate before use"): a small model prefers some option letters
whatever the message says; divide each reading by the model's reading of messages that say
nothing ("N/A", "", "[MESSAGE]", each alone in a conversation, averaged) and renormalise. This
script reads those content-free distributions with the model (three readings per task), then
replays the policy code on the readings recorded in a cases JSONL, calibrated with strength
``alpha`` (p / p_cf ** alpha), under the prior weights and answered thresholds around the ones in
use. Each variant is scored on the two 40-case samples where settings are chosen and on the rest:

    .venv/bin/python benchmarks/star_calibration.py star_full.cases.jsonl
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from sopagent.eval.star import gate
from sopagent.eval.star.adapter import next_action
from sopagent.eval.star.data import Case, Event, TaskSchema
from sopagent.eval.star.runner import Runner
from star_recorded import load_recorded_run, split_figures

CONTENT_FREE = ("N/A", "", "[MESSAGE]")


def content_free_readings(tasks: dict[str, TaskSchema], model_name: str | None) -> dict[str, dict[str, float]]:
    """Per task: the model's mean kind probabilities for the content-free messages."""
    from sopagent.models import load_model

    work = Path(tempfile.mkdtemp(prefix="star-calibration-"))
    runner = Runner(tasks, load_model(model_name), work, work / "rows.jsonl")
    readings: dict[str, dict[str, float]] = {}
    for name in sorted(tasks):
        rows = []
        for text in CONTENT_FREE:
            case = Case(f"content-free-{name}-{text}", 0, 0, name, (Event("customer", text),), "hello")
            rows.append(runner.run_case(case, runner.agent(name).start())["kind_probabilities"])
        readings[name] = {k: statistics.fmean(r[k] for r in rows) for k in rows[0]}
    return readings


def calibrated(reading: dict[str, float], content_free: dict[str, float], alpha: float) -> dict[str, float]:
    """``reading`` divided by ``content_free ** alpha``, renormalised."""
    weights = {k: p / max(content_free.get(k, 1.0), 1e-6) ** alpha for k, p in reading.items()}
    total = sum(weights.values()) or 1.0
    return {k: w / total for k, w in weights.items()}


def main() -> None:
    """Print samples / held-out mean accuracy per variant."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases_file")
    parser.add_argument("data_dir", nargs="?", default="data/star")
    parser.add_argument("--model", help="model spec (default: the embedded model)")
    args = parser.parse_args()
    run = load_recorded_run(args.cases_file, args.data_dir)
    tasks, rows, cases = run.tasks, run.rows, run.cases
    baseline = content_free_readings({c.task: tasks[c.task] for c in cases}, args.model)
    for name, reading in baseline.items():
        top = sorted(reading.items(), key=lambda kv: -kv[1])[:3]
        print(f"content-free {name:<24} " + ", ".join(f"{k} {p:.2f}" for k, p in top))
    for alpha in (0.0, 0.5, 1.0):
        for weight in (8.0, 16.0, 32.0):
            for threshold in (0.1, 0.15, 0.2):
                predictions = {}
                for case in cases:
                    task, row = tasks[case.task], rows[case.case_id]
                    reading = calibrated(row.get("kind_probabilities") or {}, baseline[case.task], alpha)
                    label = max(reading, key=reading.__getitem__) if reading else row["label"]
                    allowed = gate.allowed_actions(task, case.history)
                    predictions[case.case_id] = next_action(task, case.history, label, reading, allowed, weight,
                                                            answered_threshold=threshold)
                figures = split_figures(run, predictions)
                print(f"alpha {alpha:g}, prior x{weight:g}, answered at {threshold:g}: {figures}", flush=True)


if __name__ == "__main__":
    main()
