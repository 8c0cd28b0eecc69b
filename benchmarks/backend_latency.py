"""Decision latency per model backend, side by side in one run (prints figures; not a test).

Runs the turns of the example conversations (tests/conversations/card_services.yaml) through the
engine on each backend available here and prints, per backend, the p50 of the engine's
``extract`` and ``choose`` stages and of the whole turn, and the ratio to the in-process embedded
backend measured in the same run:

- ``llamacpp``: the embedded GGUF in process (the baseline);
- ``llamacpp-server``: the same GGUF behind llama-cpp-python's OpenAI-compatible server on
  loopback (``openai-compatible:...?format=json_object``), so the difference is HTTP, the server's
  own grammar sampler and its log-probabilities;
- ``transformers``: the small Gemma 3 270M GGUF through transformers and Outlines (a different,
  smaller model: its figures show the backend's cost, not the same decisions).

Run inside the model lock:
    flock /tmp/sopagent-model.lock .venv/bin/python benchmarks/backend_latency.py --turns 8
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sopagent import Agent, Store, load_policy  # noqa: E402
from sopagent.convtest import load_test_file  # noqa: E402
from sopagent.models import load_model  # noqa: E402
from sopagent.models.embedded import embedded_model_path  # noqa: E402
from sopagent.models.llamacpp_server import SERVER_MODEL_ALIAS, llamacpp_server  # noqa: E402

BACKENDS = ("llamacpp", "llamacpp-server", "transformers")


def p50(values: list[float]) -> float:
    """The median, or NaN for no values."""
    return float(np.percentile(values, 50)) if values else float("nan")


def run_turns(model: Any, turns: int) -> dict[str, list[float]]:
    """Play the example conversations' turns on ``model``; return the stage latencies (ms)."""
    test_file, policy_path = load_test_file(ROOT / "tests" / "conversations" / "card_services.yaml")
    policy = load_policy(policy_path)
    if hasattr(model, "warm"):
        model.warm([s.facts for s in policy.steps.values() if s.facts.model_fields])
    figures: dict[str, list[float]] = {"extract": [], "choose": [], "total": []}
    played = 0
    with tempfile.TemporaryDirectory() as scratch:
        store = Store(f"sqlite:///{scratch}/bench.db")
        for test in test_file.tests:
            agent = Agent(policy, model, store, tools=policy.make_tools())
            cid = agent.start()
            for turn in test.turns:
                if played >= turns:
                    return figures
                result = agent.respond(cid, turn.customer)
                played += 1
                for stage in figures:
                    if stage in result.latency_ms:
                        figures[stage].append(result.latency_ms[stage])
                print(f"  turn {played:2d}: {result.status:9s} extract {result.latency_ms.get('extract', 0):8.1f} ms"
                      f"  choose {result.latency_ms.get('choose', float('nan')):8.1f} ms", flush=True)
                if result.ended:
                    break
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=12, help="turns to play on each backend")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated subset of " + ", ".join(BACKENDS))
    args = parser.parse_args()
    wanted = [b.strip() for b in args.backends.split(",") if b.strip()]

    results: dict[str, dict[str, list[float]]] = {}
    with ExitStack() as stack:
        for name in wanted:
            print(f"== {name} ==", flush=True)
            if name == "llamacpp":
                model = load_model()
            elif name == "llamacpp-server":
                url = stack.enter_context(llamacpp_server(embedded_model_path()))
                model = load_model(f"openai-compatible:{url}?format=json_object#{SERVER_MODEL_ALIAS}")
            elif name == "transformers":
                model = load_model("transformers:gemma3-270m")
            else:
                raise SystemExit(f"unknown backend {name!r}; use {', '.join(BACKENDS)}")
            results[name] = run_turns(model, args.turns)
            del model

    base = results.get("llamacpp")
    print("\n| backend | turns | p50 extract ms | p50 choose ms (n) | p50 turn ms | turn vs in-process |")
    print("|---|---|---|---|---|---|")
    for name, figures in results.items():
        ratio = p50(figures["total"]) / p50(base["total"]) if base and base["total"] else float("nan")
        print(f"| {name} | {len(figures['total'])} | {p50(figures['extract']):.0f} | "
              f"{p50(figures['choose']):.0f} ({len(figures['choose'])}) | {p50(figures['total']):.0f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
