"""What recording and running an account action adds to a turn, outside the model (scripted model).

The question: how much slower is a turn that refunds a fee through the effect outbox (the decision
and its planned refund committed in one transaction, then the refund claimed, run and its outcome
chained) than the same turn whose option does nothing to the account? Two policies side by side in
one run, alternating conversation by conversation: the card-services example as it is, and a copy
whose ``fee_refunded`` option plans no refund (``do=[refund]`` removed). Each conversation is three
turns (fee refund, identity, "the late payment fee"); the third is measured. SQLite file with
``synchronous=FULL`` (the default) and in memory.

    .venv/bin/python benchmarks/effects_overhead.py --conversations 200
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np

from engine_overhead import FACTS as ANNUAL_FEE_FACTS, OK, ROOT, TEXTS as ANNUAL_FEE_TEXTS
from sopagent import Store, load_policy
from sopagent.engine import Agent
from sopagent.models.scripted import ScriptedModel
from sopagent.policy import Policy

FACTS = ANNUAL_FEE_FACTS[:2] + [{"fee_type": "late payment", "handoff": OK}]
"""The engine-overhead conversation, for the late payment fee (25.00: refunded, an account action)."""
TEXTS = ANNUAL_FEE_TEXTS[:2] + ["the late payment fee"]


def policy_without_the_refund(scratch: Path) -> Policy:
    """The card policy copied with its fee refund planning no action (the baseline)."""
    shutil.copytree(ROOT / "policies", scratch / "policies")
    shutil.copytree(ROOT / "catalogs", scratch / "catalogs")
    path = scratch / "policies" / "card_services.py"
    source = path.read_text(encoding="utf-8")
    planned = 'say("fee_refunded", next="anything_else", do=[refund], '
    assert planned in source, "the card policy no longer plans its refund this way; update this benchmark"
    path.write_text(source.replace(planned, 'say("fee_refunded", next="anything_else", '), encoding="utf-8")
    return load_policy(path)


def last_turn(policy: Policy, store: Store) -> dict[str, float]:
    """The refund turn's latency laps (ms) and its time outside the model."""
    agent = Agent(policy, ScriptedModel(facts=FACTS), store, tools=policy.make_tools(), recover_effects=False)
    cid = agent.start()
    for text in TEXTS[:-1]:
        agent.respond(cid, text)
    result = agent.respond(cid, TEXTS[-1])
    assert result.response_id == "fee_refunded", result.response_id
    latency = dict(result.latency_ms)
    latency["outside model"] = latency["total"] - latency.get("extract", 0.0) - latency.get("choose", 0.0)
    return latency


def main() -> None:
    """Print p50/p95 per variant and store, and the difference."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        variants = {"refund through the outbox": load_policy(ROOT / "policies" / "card_services.py"),
                    "no account action (baseline)": policy_without_the_refund(Path(scratch))}
        for store_name, url in (("SQLite file, synchronous=FULL", f"sqlite:///{scratch}/bench.db"),
                                ("SQLite in memory", "sqlite://")):
            store = Store(url)
            laps: dict[str, dict[str, list[float]]] = {name: {} for name in variants}
            for _ in range(args.conversations):
                for name, policy in variants.items():  # alternating: the machine's noise hits both alike
                    for stage, value in last_turn(policy, store).items():
                        laps[name].setdefault(stage, []).append(value)
            print(f"== {store_name}: {args.conversations} refund turns per variant (ms) ==")
            for name, stages in laps.items():
                shown = ", ".join(f"{stage} {np.percentile(stages[stage], 50):.2f}"
                                  for stage in ("commit", "effects") if stage in stages)
                outside = stages["outside model"]
                print(f"  {name:<30} outside model p50 {np.percentile(outside, 50):6.2f}  "
                      f"p95 {np.percentile(outside, 95):6.2f}   ({shown})")
            with_outbox = np.percentile(laps["refund through the outbox"]["outside model"], 50)
            baseline = np.percentile(laps["no account action (baseline)"]["outside model"], 50)
            print(f"  the outbox adds {with_outbox - baseline:.2f} ms at p50 ({with_outbox / baseline:.2f}x)")


if __name__ == "__main__":
    main()
