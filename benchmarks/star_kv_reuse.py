"""STAR replay: decision latency with the KV prefix kept along a dialogue vs recomputed every call.

Runs the same cases twice on the embedded model in one process: once as the harness does (cases of
a dialogue in order, so the system text and the dialogue so far stay in llama.cpp's KV cache), once
with the cache cleared before every case. Prints medians, p95 and the ratio.

    flock /tmp/sopagent-model.lock .venv/bin/python benchmarks/star_kv_reuse.py --cases 40
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from sopagent.eval.star.data import load_cases, load_tasks, sample_cases
from sopagent.eval.star.metrics import percentile
from sopagent.eval.star.runner import Runner
from sopagent.models import load_model


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", nargs="?", default="data/star")
    parser.add_argument("--cases", type=int, default=40, help="model-call cases per mode")
    args = parser.parse_args()
    data = Path(args.data_dir)
    tasks = load_tasks(data)
    cases = [c for c in sample_cases(load_cases(data, tasks), 40) if c.history and c.history[-1].role == "customer"]
    cases = sorted(cases, key=lambda c: c.task)[: args.cases]  # as the harness runs them: by task, dialogue order
    model = load_model()
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


if __name__ == "__main__":
    main()
