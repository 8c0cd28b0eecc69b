"""STAR next-action benchmark: settings re-decided from a recorded run, where a run's model time goes,
and what the KV cache saves. The full benchmark itself is ``sopagent eval star``.

* ``redecide``: decide a recorded run's cases again with the policy code, on the message readings the
  run recorded, under the harness's settings and under other ones side by side. The run's figures
  come back exactly when nothing changed (every prediction the recorded one), so this also checks
  that a change to the code leaves the figures alone. Follow-up readings the run made are reused
  with ``--reuse-recorded``; new ones are asked of the model (``--model none``: assumed unread)::

      .venv/bin/python benchmarks/star.py redecide star_full.cases.jsonl --reuse-recorded --model none
      .venv/bin/python benchmarks/star.py redecide star_40.cases.jsonl --set expected_weight=8,16,32
      .venv/bin/python benchmarks/star.py redecide star_full.cases.jsonl --reading-modes --reuse-recorded --model none

* ``costs``: every llama.cpp call of a sample run, per lane, with a least-squares fit of a call's time
  (per call + per new prompt token + per decoded token)::

      .venv/bin/python benchmarks/star.py costs --limit-per-domain 40

* ``kv-reuse``: decision latency with the prompt prefix kept in llama.cpp's KV cache along a dialogue,
  against the cache cleared before every case (the baseline), in one process::

      .venv/bin/python benchmarks/star.py kv-reuse --cases 40
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from pydantic import BaseModel
from rich.console import Console
from rich.progress import track

from sopagent import prompts
from sopagent.engine import read_follow_up
from sopagent.eval.star import gate
from sopagent.eval.star.adapter import (
    DEFAULT_SETTINGS,
    GivenAnswer,
    StarSettings,
    choose_action,
)
from sopagent.eval.star.data import Case, TaskSchema, load_cases, load_tasks, sample_cases
from sopagent.eval.star.metrics import percentile, weighted_f1
from sopagent.eval.star.runner import Runner, transcript
from sopagent.models import load_model
from sopagent.models.llamacpp import LlamaCppModel
from sopagent.policy import OneOf

M = TypeVar("M", bound=BaseModel)

TUNING_OFFSETS = (0, 40)
"""The two 40-case samples (``--limit-per-domain 40``) where settings are chosen; the rest is held out."""
HARNESS = "as the harness runs"
"""The name of the harness's own settings in a side-by-side report."""


# --- redecide -----------------------------------------------------------------------------------

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


def recorded_answers(row: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """The follow-up readings a recorded case asked: (question, schema name) -> the model's answer."""
    return {(r["question"], r.get("schema", GivenAnswer.__name__)): r["answer"]
            for r in row.get("follow_up_readings") or [] if not r.get("under_policy_text")}


def redecide_side_by_side(run: RecordedRun, cases: list[Case], model: Any, variants: dict[str, StarSettings],
                          reuse_recorded: bool = False) -> SideBySide:
    """Decide ``cases`` again with the policy code under each variant's settings, on the recorded
    message readings, as the harness's policy does (``adapter.build_policy``).

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
    for number, case in enumerate(track(cases, description="re-deciding", console=Console(stderr=True))):
        task, row = run.tasks[case.task], run.rows[case.case_id]
        allowed = gate.allowed_actions(task, case.history)
        probabilities = row.get("kind_probabilities") or ({row["label"]: 1.0} if row["label"] else {})
        context = prompts.transcript_text(transcript(case.history))
        recorded = recorded_answers(row) if reuse_recorded else {}
        for name in (list(variants) if number % 2 == 0 else list(reversed(variants))):
            settings = variants[name]

            def read(question: str, schema: type[M], name: str = name) -> M:
                answer = recorded.get((question, schema.__name__))
                if answer is not None and issubclass(schema, OneOf) \
                        and set(answer.get("probabilities") or {}) != set(schema.options):
                    answer = None  # the same question between two other kinds of message
                if answer is not None:
                    result.reused[name] += 1
                    return schema.model_validate(answer)
                if lanes[name] is None:
                    result.missing[name] += 1
                    return unread_answer(schema)
                facts, stats = read_follow_up(lanes[name], context, question, schema, prompts.READING_SYSTEM)
                result.stats[name].append(stats)
                return facts  # type: ignore[return-value]

            result.predictions[name][case.case_id] = choose_action(
                task, case.history, row["label"], probabilities, allowed, read,
                given[name].setdefault(case.dialogue_id, {}), settings)
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
    for name, predictions in side_by_side.predictions.items():
        calls = side_by_side.stats[name]
        differ = sum(predictions[k] != recorded[k] for k in recorded)
        figures = domain_figures(cases, predictions, allowed)
        print(f"{name:<40} accuracy {mean_accuracy(cases, predictions):6.1%}  ({split_figures(run, predictions)})  "
              f"live readings {len(calls):4d} ({sum(s.ms for s in calls) / 1000:6.1f} s)  "
              f"reused {side_by_side.reused[name]:4d}  not read {side_by_side.missing[name]:4d}  "
              f"differ from the recorded run {differ}")
        print("    " + "  ".join(f"{d} {f['accuracy']:.1%}" for d, f in figures.items()))
        document["variants"][name] = {
            "mean_accuracy": mean_accuracy(cases, predictions),
            "mean_weighted_f1": sum(f["weighted_f1"] for f in figures.values()) / len(figures),
            "violations": sum(f["violations"] for f in figures.values()),
            "live_readings": len(calls), "reused_readings": side_by_side.reused[name],
            "unread_readings": side_by_side.missing[name], "differ_from_recorded": differ, "domains": figures}
    if out is not None:
        out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def setting_variants(assignments: list[str]) -> dict[str, StarSettings]:
    """One variant per value of each ``NAME=V1,V2`` assignment (a :class:`StarSettings` field)."""
    types = {f.name: f.type for f in fields(StarSettings)}
    variants: dict[str, StarSettings] = {}
    for assignment in assignments:
        name, _, values = assignment.partition("=")
        if name not in types or not values:
            raise SystemExit(f"--set {assignment!r}: write NAME=V1,V2 with NAME one of {', '.join(types)}")
        for value in values.split(","):
            parsed: Any = None if value == "none" else value.lower() in ("1", "true", "yes") \
                if "bool" in str(types[name]) else float(value)
            variants[f"{name}={value}"] = replace(DEFAULT_SETTINGS, **{name: parsed})
    return variants


READING_MODES = {
    "no close-call reading": replace(DEFAULT_SETTINGS, close_call_ratio=None),
    "no answer-looking reading": replace(DEFAULT_SETTINGS, read_given=False),
    "the message reading only": replace(DEFAULT_SETTINGS, close_call_ratio=None, read_given=False),
}
"""``--reading-modes``: each follow-up reading switched off in turn."""


def cmd_redecide(args: argparse.Namespace) -> None:
    """Re-decide a recorded run under the harness's settings and the variants asked for."""
    variants = {HARNESS: DEFAULT_SETTINGS, **setting_variants(args.set or [])}
    if args.reading_modes:
        variants.update(READING_MODES)
    run = load_recorded_run(args.cases_file, args.data_dir)
    cases = sample_cases(run.cases, args.limit_per_domain, args.sample_offset) if args.limit_per_domain else run.cases
    model: Any = None if args.model == "none" else load_model(args.model)
    side_by_side = redecide_side_by_side(run, cases, model, variants, reuse_recorded=args.reuse_recorded)
    report_side_by_side(run, cases, side_by_side, args.out)


# --- costs --------------------------------------------------------------------------------------

@dataclass
class Call:
    """One llama.cpp call: its lane, what it evaluated and decoded, and its time."""

    kind: str
    domain: str
    new_tokens: int
    decoded: int
    ms: float


def record_calls(model: LlamaCppModel, calls: list[Call], domain: list[str]) -> None:
    """Record every generation of ``model`` and of its reading lane into ``calls``, each under the
    domain named by ``domain[0]`` (the case being decided)."""
    def wrap(context: LlamaCppModel, lane: str) -> None:
        generate = context._generate

        def recorded(tokens: list[int], processor: Any, max_tokens: int, stop: list[str] | None = None) -> Any:
            out, stats, finish = generate(tokens, processor, max_tokens, stop)
            kind = lane if lane == "main" else ("reading, JSON" if max_tokens > 1 else "reading, one letter")
            new_tokens = stats.prompt_tokens - stats.reused_tokens
            calls.append(Call(kind, domain[0], new_tokens, stats.generated_tokens, stats.ms))
            return out, stats, finish

        context._generate = recorded  # type: ignore[method-assign]

    wrap(model, "main")
    wrap(model.reading_lane(), "reading")


def cmd_costs(args: argparse.Namespace) -> None:
    """Run a sample through the harness and print the per-call costs."""
    tasks = load_tasks(Path(args.data_dir))
    every_case = load_cases(Path(args.data_dir), tasks)
    cases = sample_cases(every_case, args.limit_per_domain, args.sample_offset)
    model = load_model(args.model)
    if not isinstance(model, LlamaCppModel):
        raise SystemExit("costs records llama.cpp calls: pass a GGUF model (or none for the embedded one)")
    calls: list[Call] = []
    domain = [""]
    record_calls(model, calls, domain)
    with tempfile.TemporaryDirectory() as folder:
        runner = Runner(tasks, model, Path(folder) / "work", Path(folder) / "cases.jsonl")
        run_case = runner.run_case

        def run_case_of_domain(case: Any, conversation_id: str) -> dict[str, Any]:
            domain[0] = case.domain
            return run_case(case, conversation_id)

        runner.run_case = run_case_of_domain  # type: ignore[method-assign]
        started = time.perf_counter()
        runner.run(cases)
        wall = time.perf_counter() - started

    model_s = sum(c.ms for c in calls) / 1000
    print(f"{len(cases)} cases, {len(calls)} llama.cpp calls, wall {wall:.1f} s, model {model_s:.1f} s")
    for kind in sorted({c.kind for c in calls}):
        group = [c for c in calls if c.kind == kind]
        new, decoded, ms = (np.mean([getattr(c, a) for c in group]) for a in ("new_tokens", "decoded", "ms"))
        print(f"  {kind:<20} calls {len(group):5d}  new tokens/call {new:6.1f}  "
              f"decoded/call {decoded:4.1f}  ms/call {ms:7.1f}  "
              f"total {sum(c.ms for c in group) / 1000:7.1f} s")
    design = np.array([[1.0, c.new_tokens, c.decoded] for c in calls])
    fit = np.linalg.lstsq(design, np.array([c.ms for c in calls]), rcond=None)[0]
    print(f"fit: {fit[0]:.1f} ms per call + {fit[1]:.2f} ms per new prompt token + {fit[2]:.1f} ms per decoded token")
    sample_cases_of = Counter(c.domain for c in cases)
    full_cases_of = Counter(c.domain for c in every_case if c.domain in sample_cases_of)
    for lane in ("main", "reading"):
        seconds = sum(c.ms for c in calls if c.kind.startswith(lane)) / 1000
        scaled = sum(c.ms * full_cases_of[c.domain] / sample_cases_of[c.domain]
                     for c in calls if c.kind.startswith(lane)) / 1000
        print(f"  {lane} lane: {seconds:.1f} s on the sample; about {scaled / 60:.0f} min for all "
              f"{sum(full_cases_of.values())} cases at this sample's rate per domain")


# --- kv-reuse -----------------------------------------------------------------------------------

def cmd_kv_reuse(args: argparse.Namespace) -> None:
    """Decide the same cases with the KV prefix kept and with it cleared before every case."""
    data = Path(args.data_dir)
    tasks = load_tasks(data)
    cases = [c for c in sample_cases(load_cases(data, tasks), 40) if c.history and c.history[-1].role == "customer"]
    cases = sorted(cases, key=lambda c: c.task)[: args.cases]  # as the harness runs them: by task, dialogue order
    model = load_model(args.model)
    if not isinstance(model, LlamaCppModel):
        raise SystemExit("kv-reuse clears llama.cpp's cache: pass a GGUF model (or none for the embedded one)")
    figures = {}
    for mode in ("kv reuse", "no reuse"):
        with tempfile.TemporaryDirectory() as tmp:
            runner = Runner(tasks, model, Path(tmp), Path(tmp) / "cases.jsonl")
            runner.agent(cases[0].task)  # build outside the timing
            model.llama.reset()
            latencies = []
            conversations: dict[int, str] = {}
            for case in cases:
                if mode == "no reuse":
                    model.llama.reset()
                if case.dialogue_id not in conversations:
                    conversations[case.dialogue_id] = runner.agent(case.task).start()
                latencies.append(runner.run_case(case, conversations[case.dialogue_id])["latency_ms"])
            figures[mode] = latencies
            print(f"{mode:>9}: {len(latencies)} decisions, median {statistics.median(latencies):.0f} ms, "
                  f"p95 {percentile(latencies, 95):.0f} ms")
    ratio = statistics.median(figures["no reuse"]) / statistics.median(figures["kv reuse"])
    print(f"median speed-up from KV reuse: {ratio:.1f}x")


def main() -> None:
    """Parse the command line and run one of the three measurements."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    redecide = commands.add_parser("redecide", help="re-decide a recorded run under the harness's and other settings")
    redecide.add_argument("cases_file", help="a recorded run's cases JSONL (sopagent eval star --cases-file)")
    names = ", ".join(f.name for f in fields(StarSettings))
    redecide.add_argument("--set", action="append", metavar="NAME=V1,V2",
                          help=f"also decide with a setting changed, once per value ({names}; "
                               "'none' for no close-call reading)")
    redecide.add_argument("--reading-modes", action="store_true", help="also decide with each follow-up reading off")
    redecide.add_argument("--reuse-recorded", action="store_true",
                          help="answer follow-up readings the recorded run made from its rows; ask only new ones")
    redecide.add_argument("--out", type=Path, help="write every variant's figures here (JSON)")
    costs = commands.add_parser("costs", help="every llama.cpp call of a sample run, fitted")
    kv_reuse = commands.add_parser("kv-reuse", help="decision latency with and without the KV prefix kept")
    kv_reuse.add_argument("--cases", type=int, default=40, help="model-call cases per mode")
    for command in (redecide, costs, kv_reuse):
        command.add_argument("--data-dir", default="data/star")
        command.add_argument("--model", help="model spec (default: the embedded model)"
                             + ("; 'none': a reading the recorded run did not make counts as not read (an estimate)"
                                if command is redecide else ""))
    for command in (redecide, costs):
        command.add_argument("--limit-per-domain", type=int, default=40 if command is costs else 0,
                             help="a sample of N cases per domain" + (" (default: every recorded case)"
                                                                     if command is redecide else ""))
        command.add_argument("--sample-offset", type=int, default=0)
    args = parser.parse_args()
    {"redecide": cmd_redecide, "costs": cmd_costs, "kv-reuse": cmd_kv_reuse}[args.command](args)


if __name__ == "__main__":
    main()
