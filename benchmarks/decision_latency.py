"""Decision latency on the embedded model, side by side in one run (prints figures; not a test).

Over the example conversations (tests/conversations/card_services.yaml) it measures:

1. the engine's per-stage latency per turn (load, extract, policy, choose, render, commit) and the
   overhead outside model calls (total minus extraction and choice);
2. for every turn, a choice among the step's allowed set widened to N catalog replies, three ways
   on the same prompt:
   - sopagent: cached constraint, KV prefix kept, one-token letter labels;
   - naive Outlines: a new ``outlines.Generator`` per call, llama.cpp reset after every call
     (Outlines 1.3.3's default), the descriptive response ids decoded token by token;
   - floor: one llama.cpp evaluation of the same new tokens plus one decoded token, no constraint;
3. what a new allowed set costs: building the constraint for a label set not seen before, against
   building a naive ``Generator`` for a new set of ids.

Run:  .venv/bin/python benchmarks/decision_latency.py [--turns 12] [--options 6]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Literal

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sopagent import Agent, Store, load_policy  # noqa: E402
from sopagent import prompts  # noqa: E402
from sopagent.convtest import load_test_file  # noqa: E402
from sopagent.models import load_model  # noqa: E402


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=12, help="turns to measure the choice comparison on")
    parser.add_argument("--options", type=int, default=6, help="allowed-set size for the choice comparison")
    args = parser.parse_args()

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


if __name__ == "__main__":
    main()
