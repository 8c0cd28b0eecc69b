"""A recorded STAR run loaded for re-scoring, shared by the STAR benchmark scripts."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sopagent.eval.star.data import Case, TaskSchema, load_cases, load_tasks, sample_cases

TUNING_OFFSETS = (0, 40)
"""The two 40-case samples (``--limit-per-domain 40``) where settings are chosen."""


@dataclass
class RecordedRun:
    """The tasks, the rows of a cases JSONL by case id, and the cases it holds (dialogue order)."""

    tasks: dict[str, TaskSchema]
    rows: dict[str, dict[str, Any]]
    cases: list[Case]
    tuning: set[str]
    """Ids of the cases in the two samples where settings are chosen."""


def load_recorded_run(cases_file: str | Path, data_dir: str | Path) -> RecordedRun:
    """Read a recorded run's rows and the STAR cases they answer."""
    data = Path(data_dir)
    tasks = load_tasks(data)
    rows = {r["case_id"]: r for r in map(json.loads, Path(cases_file).read_text().splitlines()) if r}
    every_case = load_cases(data, tasks)
    tuning = {c.case_id for offset in TUNING_OFFSETS for c in sample_cases(every_case, 40, offset)}
    return RecordedRun(tasks, rows, [c for c in every_case if c.case_id in rows], tuning)


def mean_accuracy(cases: list[Case], predictions: dict[str, str]) -> float:
    """Mean over domains of the share of cases predicted right."""
    per_domain: dict[str, list[bool]] = {}
    for case in cases:
        per_domain.setdefault(case.domain, []).append(predictions[case.case_id] == case.gold)
    return statistics.fmean(sum(v) / len(v) for v in per_domain.values())


def split_figures(run: RecordedRun, predictions: dict[str, str]) -> str:
    """Mean accuracy on the tuning samples and on the other cases, as one line."""
    parts = {"samples": [c for c in run.cases if c.case_id in run.tuning],
             "held out": [c for c in run.cases if c.case_id not in run.tuning]}
    return "  ".join(f"{label} {mean_accuracy(cases, predictions):6.1%}" for label, cases in parts.items() if cases)
