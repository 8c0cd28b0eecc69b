"""Turn latency on the embedded model: where a turn's time goes, against the floor measured in the same run.

Plays the conversation tests of both example policies and of a policy made by ``sopagent new`` (which
no reading was tuned on), on one loaded model, and records per turn:

* wall: the engine's own measure of the turn (``latency_ms["total"]``);
* new prompt tokens: prompt tokens llama.cpp evaluated anew (not reused from its KV cache);
* decoded tokens, and how many of them the constraint forced (one allowed token);
* model calls (JSON readings, one-token readings, choices);
* floor: what llama.cpp needs at the least, measured in this run: evaluating only the customer's new
  message (its tokens times this run's cost per prompt token) plus one decoded token per model call.

Between turns the agent prepares the next one (``Agent.prepare_next``: the conversation so far is
evaluated into the cache, as ``sopagent chat`` and ``sopagent serve`` do while the customer types);
that time is not the customer's wait and is not counted. With ``--baseline`` every conversation is
also played as before these two savings: no preparation, and the keys of JSON answers decoded token
by token (no jump-forward), alternating which goes first, and both are printed side by side.

    .venv/bin/python benchmarks/turn_latency.py [--baseline]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

from sopagent.convtest import load_test_file  # noqa: E402
from sopagent.engine import Agent  # noqa: E402
from sopagent.models import load_model  # noqa: E402
from sopagent.models.base import CallStats, ChatPrompt, Choice, Extraction  # noqa: E402
from sopagent.policy import load_policy  # noqa: E402
from sopagent.scaffold import create_policy  # noqa: E402
from sopagent.store import Store  # noqa: E402


@dataclass
class TurnCost:
    """What the model did during one turn."""

    calls: int = 0
    new_prompt_tokens: int = 0
    decoded: int = 0
    forced: int = 0
    model_ms: float = 0.0
    kinds: list[str] = field(default_factory=list)

    def add(self, stats: CallStats, kind: str) -> None:
        self.calls += 1
        self.new_prompt_tokens += stats.prompt_tokens - stats.reused_tokens + stats.jumped_tokens
        self.decoded += stats.generated_tokens
        self.forced += stats.forced_tokens
        self.model_ms += stats.ms
        self.kinds.append(kind)


class Recording:
    """The model, with each call's cost added to the current turn."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.turn = TurnCost()

    def extract(self, prompt: ChatPrompt, schema: Any) -> Extraction:
        result: Extraction = self.inner.extract(prompt, schema)
        self.turn.add(result.stats, "json")
        return result

    def choose(self, prompt: ChatPrompt, n_options: int) -> Choice:
        result: Choice = self.inner.choose(prompt, n_options)
        self.turn.add(result.stats, "choice")
        return result

    def __getattr__(self, name: str) -> Any:  # warm, reading_lane, self_test: the inner model's
        return getattr(self.inner, name)


def cost_per_token(model: Any) -> tuple[float, float]:
    """This run's ms per evaluated prompt token and per decoded token, from llama.cpp directly."""
    llama = model.llama
    text = ("The customer wrote a message about a card payment they do not recognise, and the agent asked "
            "for the date, the amount and the merchant of the payment so that it can be found. ") * 3
    tokens = llama.tokenize(text.encode(), add_bos=True, special=False)
    llama.reset()
    started = time.perf_counter()
    llama.eval(tokens)
    per_prompt = (time.perf_counter() - started) * 1000 / len(tokens)
    started = time.perf_counter()
    for _ in range(8):
        llama.eval([llama.tokenize(b" the", add_bos=False, special=False)[0]])
    per_decoded = (time.perf_counter() - started) * 1000 / 8
    llama.reset()
    return per_prompt, per_decoded


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else float("nan")


def play(agent: Agent, test: Any, model: Recording, inner: Any, per_prompt: float, per_decoded: float,
         rows: list[dict[str, float]], label: str, prepare: bool) -> None:
    """One test conversation; a row per turn (with ``prepare``, each turn prepared while "typing")."""
    conversation = agent.start()
    for turn in test.turns:
        model.turn = TurnCost()
        try:
            result = agent.respond(conversation, turn.customer)
        except Exception as exc:  # a closed conversation ends the test here
            print(f"  {label}: {test.name}: {exc}", file=sys.stderr)
            return
        message_tokens = len(inner.llama.tokenize(turn.customer.encode(), add_bos=False, special=False))
        cost = model.turn
        floor = message_tokens * per_prompt + max(1, cost.calls) * per_decoded if cost.calls else 0.0
        rows.append({"wall": result.latency_ms.get("total", 0.0), "new": cost.new_prompt_tokens,
                     "decoded": cost.decoded, "forced": cost.forced, "calls": cost.calls, "floor": floor})
        if result.ended:
            return
        if prepare:
            agent.prepare_next(conversation)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model spec (default: the embedded model)")
    parser.add_argument("--baseline", action="store_true",
                        help="also play every conversation as before (no preparation, keys decoded), side by side")
    args = parser.parse_args()
    inner = load_model(args.model)
    per_prompt, per_decoded = cost_per_token(inner)
    model = Recording(inner)
    print(f"this run: {per_prompt:.2f} ms per prompt token, {per_decoded:.1f} ms per decoded token")
    with tempfile.TemporaryDirectory() as scratch:
        create_policy("member_desk", scratch)
        files = {"card services": ROOT / "tests" / "conversations" / "card_services.yaml",
                 "retail orders": ROOT / "tests" / "conversations" / "retail_orders.yaml",
                 "new policy (untuned)": Path(scratch) / "tests" / "conversations" / "member_desk.yaml"}
        store = Store(f"sqlite:///{scratch}/turns.db")
        rows: dict[str, list[dict[str, float]]] = {}
        for label, path in files.items():
            test_file, policy_path = load_test_file(path)
            policy = load_policy(policy_path)
            inner.warm([s.facts for s in policy.steps.values() if s.facts.model_fields])
            modes = [True, False] if args.baseline else [True]
            for number, test in enumerate(test_file.tests):
                for jump in modes if number % 2 == 0 else modes[::-1]:
                    inner.jump_forward = jump
                    name = label if jump else f"{label}, before"
                    play(Agent(policy, model, store, tools=policy.make_tools()), test, model, inner, per_prompt,
                         per_decoded, rows.setdefault(name, []), label, prepare=jump)
    print(f"\n{'policy':32}{'turns':>6}{'wall p50':>10}{'p95':>8}{'floor p50':>11}{'wall/floor':>11}"
          f"{'new tok':>9}{'decoded':>9}{'forced':>8}{'calls':>7}")
    everything = [row for name, values in rows.items() if "before" not in name for row in values]
    baseline = [row for name, values in rows.items() if "before" in name for row in values]
    totals = [("all", everything)] + ([("all, before", baseline)] if baseline else [])
    for label, values in [*sorted(rows.items()), *totals]:
        walls = [r["wall"] for r in values]
        floors = [r["floor"] for r in values if r["floor"]]
        ratio = statistics.median(walls) / statistics.median(floors) if floors else float("nan")
        print(f"{label:32}{len(values):6d}{pct(walls, 0.5):10.0f}{pct(walls, 0.95):8.0f}{pct(floors, 0.5):11.0f}"
              f"{ratio:11.1f}{statistics.mean(r['new'] for r in values):9.0f}"
              f"{statistics.mean(r['decoded'] for r in values):9.1f}{statistics.mean(r['forced'] for r in values):8.1f}"
              f"{statistics.mean(r['calls'] for r in values):7.1f}")
    print("\n(wall and floor in ms; new tok (keys appended included), decoded, forced and calls are means per turn)")
    if baseline:
        for q in (0.5, 0.95):
            now, before = pct([r["wall"] for r in everything], q), pct([r["wall"] for r in baseline], q)
            print(f"wall p{int(q * 100)} now / before: {now / before:.2f}")


if __name__ == "__main__":
    main()
