"""A recorded STAR run loaded for re-scoring, shared by the STAR benchmark scripts."""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel
from rich.console import Console
from rich.progress import track

from sopagent import prompts
from sopagent.eval.star import gate
from sopagent.engine import read_follow_up
from sopagent.eval.star.adapter import GivenAnswer, next_action, policy_description, skip_given
from sopagent.eval.star.data import Case, TaskSchema, load_cases, load_tasks, sample_cases
from sopagent.eval.star.metrics import weighted_f1
from sopagent.policy import OneOf
from sopagent.eval.star.runner import transcript

M = TypeVar("M", bound=BaseModel)

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
    cases_file: str = ""
    """The recorded run's file name (no folder)."""


def load_recorded_run(cases_file: str | Path, data_dir: str | Path) -> RecordedRun:
    """Read a recorded run's rows and the STAR cases they answer."""
    data = Path(data_dir)
    tasks = load_tasks(data)
    rows = {r["case_id"]: r for r in map(json.loads, Path(cases_file).read_text().splitlines()) if r}
    every_case = load_cases(data, tasks)
    tuning = {c.case_id for offset in TUNING_OFFSETS for c in sample_cases(every_case, 40, offset)}
    return RecordedRun(tasks, rows, [c for c in every_case if c.case_id in rows], tuning, Path(cases_file).name)


def mean_accuracy(cases: list[Case], predictions: dict[str, str]) -> float:
    """Mean over domains of the share of cases predicted right."""
    per_domain: dict[str, list[bool]] = {}
    for case in cases:
        per_domain.setdefault(case.domain, []).append(predictions[case.case_id] == case.gold)
    return statistics.fmean(sum(v) / len(v) for v in per_domain.values())


def split_figures(run: RecordedRun, predictions: dict[str, str]) -> str:
    """Mean accuracy on the tuning samples and on the other cases, as one line."""
    decided = [c for c in run.cases if c.case_id in predictions]
    parts = {"samples": [c for c in decided if c.case_id in run.tuning],
             "held out": [c for c in decided if c.case_id not in run.tuning]}
    return "  ".join(f"{label} {mean_accuracy(cases, predictions):6.1%}" for label, cases in parts.items() if cases)


def sample_arguments(description: str) -> argparse.ArgumentParser:
    """The command line of a script that re-decides a sample of a recorded run."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("cases_file", help="a recorded run's cases JSONL (kind_probabilities per row)")
    parser.add_argument("data_dir", nargs="?", default="data/star")
    parser.add_argument("--limit-per-domain", type=int, default=40)
    parser.add_argument("--sample-offset", type=int, default=0)
    parser.add_argument("--model", help="model spec (default: the embedded model); 'none': no model, a reading "
                                        "the recorded run did not make counts as not read (nothing given, the "
                                        "first option): an estimate")
    return parser


@dataclass
class Variant:
    """One setting to re-decide with: keyword arguments for ``next_action`` and for ``skip_given``."""

    next_action: dict[str, Any] = field(default_factory=dict)
    skip_given: dict[str, Any] = field(default_factory=dict)
    settle_close_calls: bool = False
    """Give ``next_action`` the follow-up reader, so it settles close calls with a second reading
    (as the harness does since the eleventh session); off, the scripts measured before that
    reproduce their figures."""
    close_calls_under_policy_text: bool = False
    """Ask the close-call reading under the policy's system text, right after the step's own reading
    (measured in the thirteenth session and not adopted); off, under the readings' own system text, as
    the harness does."""
    read_given: bool = True
    """Look for the customer's answer before asking for a fact (``adapter.skip_given``), as the
    harness does; off, the question is asked without that reading."""
    reading_system: str = prompts.READING_SYSTEM
    """The system text of the follow-up readings on the reading lane (a recorded answer is reused only
    under the text the harness ran with)."""


@dataclass
class SideBySide:
    """Each variant's predictions by case id and the stats of the follow-up readings it asked."""

    predictions: dict[str, dict[str, str]]
    stats: dict[str, list[Any]]
    """The stats of each live follow-up reading, per variant."""
    reused: dict[str, int] = field(default_factory=dict)
    """Follow-up readings answered from the recorded run instead (``reuse_recorded``), per variant."""
    missing: dict[str, int] = field(default_factory=dict)
    """Follow-up readings neither recorded nor asked (no model): answered by :func:`unread_answer`."""


def unread_answer(schema: type[M]) -> M:
    """The answer assumed for a reading asked without a model: nothing given, or the first option
    (the action the procedure already had), so the figure is an estimate that leans to no change."""
    if issubclass(schema, OneOf):
        first = next(iter(schema.options))
        return schema.model_validate({"label": first, "probabilities": {o: float(o == first) for o in schema.options}})
    return schema.model_validate({"answer": None})


def recorded_answers(row: dict[str, Any]) -> dict[tuple[str, str, bool], dict[str, Any]]:
    """The follow-up readings a recorded case asked: (question, schema name, under the policy's
    system text) -> the model's answer."""
    return {(r["question"], r.get("schema", GivenAnswer.__name__), bool(r.get("under_policy_text"))): r["answer"]
            for r in row.get("follow_up_readings") or []}


def redecide_side_by_side(run: RecordedRun, cases: list[Case], model: Any,
                          variants: dict[str, Variant], reuse_recorded: bool = False) -> SideBySide:
    """Decide ``cases`` again with the policy code under each variant, on the recorded message readings.

    The follow-up readings are asked live, each variant on its own reading lane of the same weights
    (so each pays its own catch-up of the dialogue, as in a run), alternating which goes first.
    ``reuse_recorded``: a follow-up question the recorded run asked in the same case is answered
    with the recorded answer (the prompt is the same, and decoding is greedy), so only the readings
    a variant adds cost model time; with ``model`` None a new reading is not asked but answered by
    :func:`unread_answer` and counted (``SideBySide.missing``).
    """
    lanes: dict[str, Any] = {}
    lane = model.reading_lane() if model is not None else None
    for name in variants:
        lanes[name] = lane
        lane = lane.reading_lane() if lane is not None else None
    given: dict[str, dict[int, dict[str, str]]] = {name: {} for name in variants}
    result = SideBySide({name: {} for name in variants}, {name: [] for name in variants},
                        {name: 0 for name in variants}, {name: 0 for name in variants})
    progress = track(cases, description="re-deciding", console=Console(stderr=True))
    for number, case in enumerate(progress):
        task, row = run.tasks[case.task], run.rows[case.case_id]
        allowed = gate.allowed_actions(task, case.history)
        probabilities = row.get("kind_probabilities") or ({row["label"]: 1.0} if row["label"] else {})
        context = prompts.transcript_text(transcript(case.history))
        policy_system = prompts.system_text(policy_description(task))
        recorded = recorded_answers(row) if reuse_recorded else {}
        order = list(variants) if number % 2 == 0 else list(reversed(variants))
        for name in order:
            variant = variants[name]

            def read(question: str, schema: type[M], name: str = name, system: str = variant.reading_system) -> M:
                answer = recorded.get((question, schema.__name__, system == policy_system)) \
                    if system in (prompts.READING_SYSTEM, policy_system) else None
                if answer is not None and issubclass(schema, OneOf) \
                        and set(answer.get("probabilities") or {}) != set(schema.options):
                    answer = None  # the same question between two other kinds of message
                if answer is not None:
                    result.reused[name] += 1
                    return schema.model_validate(answer)
                if lanes[name] is None:
                    result.missing[name] += 1
                    return unread_answer(schema)
                facts, stats = read_follow_up(lanes[name], context, question, schema, system)
                result.stats[name].append(stats)
                return facts  # type: ignore[return-value]

            def read_close_call(question: str, schema: type[M], name: str = name) -> M:
                system = policy_system if variant.close_calls_under_policy_text else variant.reading_system
                return read(question, schema, name, system)

            chosen = next_action(task, case.history, row["label"], probabilities, allowed,
                                 read=read_close_call if variant.settle_close_calls else None, **variant.next_action)
            if variant.read_given and gate.last_kind(case.history) == "customer":
                chosen = skip_given(task, chosen, allowed, read, given[name].setdefault(case.dialogue_id, {}),
                                    history=case.history, **variant.skip_given)
            result.predictions[name][case.case_id] = chosen
    return result


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


def report_side_by_side(run: RecordedRun, cases: list[Case], side_by_side: SideBySide, out: Path | None = None) -> None:
    """Print each variant's accuracy (tuning samples / held out, per domain) and follow-up reading
    cost against the recorded run; with ``out``, write the same figures as JSON."""
    recorded = {c.case_id: run.rows[c.case_id]["pred"] for c in cases}
    allowed = {c.case_id: run.rows[c.case_id]["allowed"] for c in cases}
    print(f"{len(cases)} cases; recorded run {mean_accuracy(cases, recorded):.1%}")
    document: dict[str, Any] = {"cases": len(cases), "cases_file": run.cases_file, "variants": {}}
    for name in side_by_side.predictions:
        calls, predictions = side_by_side.stats[name], side_by_side.predictions[name]
        differ = sum(predictions[k] != recorded[k] for k in recorded)
        figures = domain_figures(cases, predictions, allowed)
        print(f"{name:<46} accuracy {mean_accuracy(cases, predictions):6.1%}  ({split_figures(run, predictions)})  "
              f"live readings {len(calls):4d} ({sum(s.ms for s in calls) / 1000:6.1f} s)  "
              f"reused {side_by_side.reused[name]:4d}  not read (no model) {side_by_side.missing[name]:4d}  "
              f"differ from the recorded run {differ}")
        print("    " + "  ".join(f"{d} {f['accuracy']:.1%}" for d, f in figures.items()))
        document["variants"][name] = {
            "mean_accuracy": mean_accuracy(cases, predictions),
            "mean_weighted_f1": sum(f["weighted_f1"] for f in figures.values()) / len(figures),
            "violations": sum(f["violations"] for f in figures.values()),
            "live_readings": len(calls), "reused_readings": side_by_side.reused[name],
            "unread_readings": side_by_side.missing[name],
            "differ_from_recorded": differ, "domains": figures}
    if out is not None:
        out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def compare_variants(description: str, variants: dict[str, Variant]) -> None:
    """The command line of a script that re-decides a recorded run under ``variants`` and reports
    them side by side (:func:`redecide_side_by_side`, :func:`report_side_by_side`)."""
    parser = sample_arguments(description)
    parser.add_argument("--reuse-recorded", action="store_true",
                        help="answer follow-up readings the recorded run made from its rows; ask only new ones")
    parser.add_argument("--out", type=Path, help="write the figures of every variant here (JSON)")
    parser.add_argument("--no-close-calls", action="store_true",
                        help="re-decide every variant without close-call readings (then --model none needs no "
                             "reading at all with --reuse-recorded)")
    args = parser.parse_args()
    if args.no_close_calls:
        variants = {name: replace(variant, settle_close_calls=False) for name, variant in variants.items()}
    run, cases, side_by_side = redecide_from_arguments(args, variants, reuse_recorded=args.reuse_recorded)
    report_side_by_side(run, cases, side_by_side, args.out)


def redecide_from_arguments(args: argparse.Namespace, variants: dict[str, Variant],
                            reuse_recorded: bool) -> tuple[RecordedRun, list[Case], SideBySide]:
    """The recorded run, the sample and the side-by-side re-decision that :func:`sample_arguments`'
    parsed ``args`` name (``--model none``: no model)."""
    from sopagent.models import load_model

    run = load_recorded_run(args.cases_file, args.data_dir)
    cases = sample_cases(run.cases, args.limit_per_domain, args.sample_offset)
    model: Any = None if args.model == "none" else load_model(args.model)
    return run, cases, redecide_side_by_side(run, cases, model, variants, reuse_recorded=reuse_recorded)


def compare_live(description: str, variants: dict[str, Variant]) -> None:
    """The command line of a script that re-decides a sample of a recorded run under ``variants``,
    every follow-up reading asked live (so each variant's reading cost is measured), and prints per
    variant: accuracy, readings, their model time, new prompt tokens and decoded tokens."""
    args = sample_arguments(description).parse_args()
    run, cases, side_by_side = redecide_from_arguments(args, variants, reuse_recorded=False)
    recorded = {c.case_id: run.rows[c.case_id]["pred"] for c in cases}
    print(f"{len(cases)} cases (limit {args.limit_per_domain} per domain, offset {args.sample_offset}); "
          f"recorded run {mean_accuracy(cases, recorded):.1%}")
    for name in variants:
        calls, predictions = side_by_side.stats[name], side_by_side.predictions[name]
        new = [s.prompt_tokens - s.reused_tokens for s in calls]
        differ = sum(predictions[k] != recorded[k] for k in recorded)
        print(f"{name:<36} accuracy {mean_accuracy(cases, predictions):6.1%}  readings {len(calls):4d}  "
              f"model time {sum(s.ms for s in calls) / 1000:6.1f} s  new prompt tokens {sum(new):6d} "
              f"(p50 {statistics.median(new) if new else 0:.0f} a reading)  "
              f"decoded {sum(s.generated_tokens for s in calls)}  differ from the recorded run {differ}")
