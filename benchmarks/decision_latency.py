"""Decision latency, each figure against a baseline measured side by side in the same run.

* ``model``: on the embedded model, over the example conversations (tests/conversations/card_services.yaml):
  the engine's per-stage latency per turn (load, extract, policy, choose, render, commit) and the overhead
  outside model calls; then, for every turn, a choice among the step's allowed set widened to N catalog
  replies, three ways on the same prompt: sopagent (cached constraint, KV prefix kept, one-token letter
  labels); naive Outlines (a new ``outlines.Generator`` per call, llama.cpp reset after every call, the
  response ids decoded token by token); the floor (one llama.cpp evaluation of the same new tokens plus
  one decoded token, no constraint); and what a new allowed set costs to compile.
* ``engine``: everything that is not a model call, with a scripted model: a three-turn card-services
  conversation (fee refund: intent, identity, a real choice) many times, per-stage p50/p95 on a SQLite file
  (``synchronous=FULL``: every reply waits for an fsync of its record) against SQLite in memory.
* ``effects``: what recording and running an account action adds to a turn: the card-services refund turn
  (the decision and its planned refund committed in one transaction, then the refund claimed, run and its
  outcome chained) against a copy of the policy whose ``fee_refunded`` plans no refund, alternating.

Run::

    .venv/bin/python benchmarks/decision_latency.py model [--turns 12] [--options 6]
    .venv/bin/python benchmarks/decision_latency.py engine --conversations 200
    .venv/bin/python benchmarks/decision_latency.py effects --conversations 200
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Literal

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sopagent import (  # noqa: E402
    Agent,
    Store,
    load_policy,
    prompts,  # noqa: E402
)
from sopagent.convtest import load_test_file  # noqa: E402
from sopagent.models import load_model  # noqa: E402
from sopagent.models.scripted import ScriptedModel  # noqa: E402
from sopagent.policy import Policy  # noqa: E402


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def floor_ms(model, text: str, reused: int) -> float:
    """One llama.cpp evaluation of the tokens after the cached prefix, plus one greedy token."""
    llama = model.llama
    tokens = llama.tokenize(text.encode(), add_bos=False, special=True)
    llama._ctx.kv_cache_seq_rm(-1, reused, -1)
    llama.n_tokens = reused
    started = time.perf_counter()
    llama.eval(tokens[reused:])
    logits = llama._ctx.get_logits()
    int(np.argmax(np.ctypeslib.as_array(logits, shape=(llama.n_vocab(),))))
    return (time.perf_counter() - started) * 1000


def naive_choice_ms(model, text: str, ids: list[str]) -> tuple[float, float]:
    """A fresh Generator per call over the descriptive ids, llama.cpp reset (Outlines' default)."""
    import outlines
    from outlines.models.llamacpp import LlamaCpp

    # Outlines' LlamaCpp resets llama.cpp after every call, so a naive deployment starts each call
    # with an empty KV cache. Reproduce that state, then put sopagent's cache back for the next turn.
    state = model.llama.save_state()
    model.llama.reset()
    started = time.perf_counter()
    naive = LlamaCpp(model.llama, chat_mode=False)  # Outlines' own class: resets after every call
    generator = outlines.Generator(naive, Literal[tuple(ids)])  # type: ignore[misc]
    built = time.perf_counter()
    generator(text, max_tokens=16, temperature=0.0)
    elapsed = (time.perf_counter() - started) * 1000
    model.llama.load_state(state)
    return elapsed, (built - started) * 1000


def measure_model(args: argparse.Namespace) -> None:
    """``model``: the engine's stages on the embedded model, and a choice three ways."""

    model = load_model()
    test_file, policy_path = load_test_file(ROOT / "tests" / "conversations" / "card_services.yaml")
    policy = load_policy(policy_path)
    model.warm([s.facts for s in policy.steps.values() if s.facts.model_fields])
    catalog_ids = list(policy.catalog.responses)

    stage: dict[str, list[float]] = {}
    overhead: list[float] = []
    ours, naive, naive_build, floor = [], [], [], []
    with tempfile.TemporaryDirectory() as scratch:
        store = Store(f"sqlite:///{scratch}/bench.db")
        measured = 0
        for test in test_file.tests:
            agent = Agent(policy, model, store, tools=policy.make_tools())
            cid = agent.start()
            for turn in test.turns:
                history = agent._history(cid)
                result = agent.respond(cid, turn.customer)
                for name, value in result.latency_ms.items():
                    stage.setdefault(name, []).append(value)
                model_ms = result.latency_ms.get("extract", 0.0) + result.latency_ms.get("choose", 0.0)
                overhead.append(result.latency_ms["total"] - model_ms)
                if measured >= args.turns:
                    continue
                measured += 1
                # the same decision point, widened to N options so that there is a real choice
                allowed = [o.response_id for o in result.options]
                extra = [i for i in catalog_ids if i not in allowed]
                ids = (allowed + extra)[: args.options]
                context = prompts.conversation_text(history, turn.customer)
                texts = [policy.catalog[i].description for i in ids]
                prompt = prompts.choice_prompt(agent._system, context, texts)
                text = model.render(prompt)
                choice = model.choose(prompt, len(ids))
                ours.append(choice.stats.ms)
                floor.append(floor_ms(model, text, choice.stats.reused_tokens))
                naive_prompt = text.replace("Answer with the letter only.", "Answer with the reply's id only: "
                                            + ", ".join(ids) + ".")
                total, built = naive_choice_ms(model, naive_prompt, ids)
                naive.append(total)
                naive_build.append(built)
                print(f"turn {measured:2d}: sopagent {choice.stats.ms:7.1f} ms  floor {floor[-1]:7.1f} ms  "
                      f"naive {total:7.1f} ms (Generator build {built:6.1f} ms)", flush=True)

    # a new allowed set: a label set never compiled before vs a naive Generator for new ids
    model._processors.clear()
    started = time.perf_counter()
    model.processor(model.choice_regex(args.options + 3))
    new_set_ms = (time.perf_counter() - started) * 1000

    print("\n== engine stages over the example conversations (ms) ==")
    for name, values in stage.items():
        print(f"{name:>8}: p50 {pct(values, 50):8.1f}   p95 {pct(values, 95):8.1f}   n={len(values)}")
    print(f"overhead outside model calls: p50 {pct(overhead, 50):.2f} ms, p95 {pct(overhead, 95):.2f} ms")
    print(f"\n== a choice among {args.options} options, {len(ours)} turns (ms) ==")
    for name, values in (("sopagent", ours), ("floor", floor), ("naive Outlines", naive)):
        print(f"{name:>15}: p50 {pct(values, 50):8.1f}   mean {statistics.mean(values):8.1f}")
    ratios = [o / f for o, f in zip(ours, floor)]
    print(f"sopagent / floor: median {statistics.median(ratios):.2f}x   "
          f"naive / sopagent: median {statistics.median([n / o for n, o in zip(naive, ours)]):.1f}x")
    print(f"\nnew allowed set: sopagent constraint build {new_set_ms:.1f} ms   "
          f"naive Generator build p50 {pct(naive_build, 50):.1f} ms")


OK = "not_requested"
FEE_FACTS = [{"intent": "fee_refund", "handoff": OK},
         {"card_last4": "4821", "date_of_birth": "1985-03-14", "handoff": OK},
         {"fee_type": "annual", "handoff": OK}]
FEE_TEXTS = ["I was charged a fee", "4821, 14 March 1985", "the annual fee"]


def engine_stages(store: Store, conversations: int) -> dict[str, list[float]]:
    """Per-stage latencies (ms) of every non-model stage over ``conversations`` conversations."""
    policy = load_policy(ROOT / "policies" / "card_services.py")
    stages: dict[str, list[float]] = {}
    for _ in range(conversations):
        model = ScriptedModel(facts=FEE_FACTS, choices=[[0.9, 0.1]])
        agent = Agent(policy, model, store, tools=policy.make_tools())
        cid = agent.start()
        for text in FEE_TEXTS:
            latency = agent.respond(cid, text).latency_ms
            model_ms = latency.get("extract", 0.0) + latency.get("choose", 0.0)
            for name in ("load", "policy", "render", "commit"):
                stages.setdefault(name, []).append(latency.get(name, 0.0))
            stages.setdefault("outside model", []).append(latency["total"] - model_ms)
    return stages


def measure_engine(args: argparse.Namespace) -> None:
    """``engine``: the non-model stages on a SQLite file against SQLite in memory."""
    with tempfile.TemporaryDirectory() as scratch:
        on_file = engine_stages(Store(f"sqlite:///{scratch}/bench.db"), args.conversations)
        results = {"SQLite file (synchronous=FULL)": on_file,
                   "SQLite in memory (baseline)": engine_stages(Store("sqlite://"), args.conversations)}
    for label, stages in results.items():
        print(f"== {label}: {args.conversations * len(FEE_TEXTS)} turns (ms) ==")
        for name, values in stages.items():
            print(f"{name:>14}: p50 {np.percentile(values, 50):7.2f}   p95 {np.percentile(values, 95):7.2f}")


REFUND_FACTS = FEE_FACTS[:2] + [{"fee_type": "late payment", "handoff": OK}]
"""The engine-overhead conversation, for the late payment fee (25.00: refunded, an account action)."""
REFUND_TEXTS = FEE_TEXTS[:2] + ["the late payment fee"]


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
    agent = Agent(policy, ScriptedModel(facts=REFUND_FACTS), store, tools=policy.make_tools(), recover_effects=False)
    cid = agent.start()
    for text in REFUND_TEXTS[:-1]:
        agent.respond(cid, text)
    result = agent.respond(cid, REFUND_TEXTS[-1])
    assert result.response_id == "fee_refunded", result.response_id
    latency = dict(result.latency_ms)
    latency["outside model"] = latency["total"] - latency.get("extract", 0.0) - latency.get("choose", 0.0)
    return latency


def measure_effects(args: argparse.Namespace) -> None:
    """``effects``: the refund turn with its account action against the same turn without it."""
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


def main() -> None:
    """Parse the command line and run one measurement."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    model = commands.add_parser("model", help="engine stages on the embedded model; a choice three ways")
    model.add_argument("--turns", type=int, default=12, help="turns to measure the choice comparison on")
    model.add_argument("--options", type=int, default=6, help="allowed-set size for the choice comparison")
    for name, text in (("engine", "the stages outside the model (scripted model), file against memory"),
                       ("effects", "what an account action adds to a turn (scripted model)")):
        commands.add_parser(name, help=text).add_argument("--conversations", type=int, default=200)
    args = parser.parse_args()
    {"model": measure_model, "engine": measure_engine, "effects": measure_effects}[args.command](args)


if __name__ == "__main__":
    main()
