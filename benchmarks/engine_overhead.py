"""Engine overhead outside model calls, with a scripted model (no language model needed).

Runs a three-turn card-services conversation (fee refund: intent, identity, a real choice) many
times through ``Agent.respond`` on a SQLite file, and prints the per-stage p50/p95 of everything
that is not a model call: load, policy, render, commit, and their sum. Two stores side by side in
the same run: the default (``synchronous=FULL``: every reply waits for an fsync of its record) and
an in-memory SQLite database as the baseline without disk.

    .venv/bin/python benchmarks/engine_overhead.py --conversations 200
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from sopagent import Store, load_policy
from sopagent.engine import Agent
from sopagent.models.scripted import ScriptedModel

ROOT = Path(__file__).resolve().parent.parent
OK = "not_requested"
FACTS = [{"intent": "fee_refund", "handoff": OK},
         {"card_last4": "4821", "date_of_birth": "1985-03-14", "handoff": OK},
         {"fee_type": "annual", "handoff": OK}]
TEXTS = ["I was charged a fee", "4821, 14 March 1985", "the annual fee"]


def run(store: Store, conversations: int) -> dict[str, list[float]]:
    """Per-stage latencies (ms) of every non-model stage over ``conversations`` conversations."""
    policy = load_policy(ROOT / "policies" / "card_services.py")
    stages: dict[str, list[float]] = {}
    for _ in range(conversations):
        model = ScriptedModel(facts=FACTS, choices=[[0.9, 0.1]])
        agent = Agent(policy, model, store, tools=policy.make_tools())
        cid = agent.start()
        for text in TEXTS:
            latency = agent.respond(cid, text).latency_ms
            model_ms = latency.get("extract", 0.0) + latency.get("choose", 0.0)
            for name in ("load", "policy", "render", "commit"):
                stages.setdefault(name, []).append(latency.get(name, 0.0))
            stages.setdefault("outside model", []).append(latency["total"] - model_ms)
    return stages


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        results = {"SQLite file (synchronous=FULL)": run(Store(f"sqlite:///{scratch}/bench.db"), args.conversations),
                   "SQLite in memory (baseline)": run(Store("sqlite://"), args.conversations)}
    for label, stages in results.items():
        print(f"== {label}: {args.conversations * len(TEXTS)} turns (ms) ==")
        for name, values in stages.items():
            print(f"{name:>14}: p50 {np.percentile(values, 50):7.2f}   p95 {np.percentile(values, 95):7.2f}")


if __name__ == "__main__":
    main()
