"""Where a STAR harness run's model time goes: every llama.cpp call of a sample, per lane, fitted.

Runs the harness itself (``Runner``: the engine, the policy code, the audit store) on a sample of
whole dialogues, with a recorder around the llama.cpp backend's one generation method on both
contexts (the step's message reading on the main lane, follow-up readings on the reading lane).
Prints per kind of call: calls, new prompt tokens, decoded tokens and model time; a least-squares fit
of a call's time (per call + per new prompt token + per decoded token); and, scaled by the cases of
each domain, the model time a full run of every case would spend on each lane:

    .venv/bin/python benchmarks/star_call_costs.py --limit-per-domain 40
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sopagent.eval.star.data import load_cases, load_tasks, sample_cases
from sopagent.eval.star.runner import Runner
from sopagent.models import load_model
from sopagent.models.llamacpp import LlamaCppModel


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
            calls.append(Call(kind, domain[0], stats.prompt_tokens - stats.reused_tokens, stats.generated_tokens, stats.ms))
            return out, stats, finish

        context._generate = recorded  # type: ignore[method-assign]

    wrap(model, "main")
    wrap(model.reading_lane(), "reading")


def main() -> None:
    """Run the sample and print the per-call costs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", nargs="?", default="data/star")
    parser.add_argument("--limit-per-domain", type=int, default=40)
    parser.add_argument("--sample-offset", type=int, default=0)
    parser.add_argument("--model", help="GGUF file (default: the embedded model)")
    args = parser.parse_args()

    tasks = load_tasks(Path(args.data_dir))
    every_case = load_cases(Path(args.data_dir), tasks)
    cases = sample_cases(every_case, args.limit_per_domain, args.sample_offset)
    model = load_model(args.model)
    if not isinstance(model, LlamaCppModel):
        raise SystemExit("this benchmark records llama.cpp calls: pass a GGUF model (or none for the embedded one)")
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

    print(f"{len(cases)} cases, {len(calls)} llama.cpp calls, wall {wall:.1f} s, model {sum(c.ms for c in calls) / 1000:.1f} s")
    for kind in sorted({c.kind for c in calls}):
        group = [c for c in calls if c.kind == kind]
        print(f"  {kind:<20} calls {len(group):5d}  new tokens/call {np.mean([c.new_tokens for c in group]):6.1f}  "
              f"decoded/call {np.mean([c.decoded for c in group]):4.1f}  ms/call {np.mean([c.ms for c in group]):7.1f}  "
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


if __name__ == "__main__":
    main()
