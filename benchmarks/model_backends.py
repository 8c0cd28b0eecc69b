"""The model backends on this machine: decision latency per backend, llama.cpp threads per process, build speed.

* ``latency``: decision latency per model backend. Runs the turns of the example conversations
  (tests/conversations/card_services.yaml) through the engine on each backend and prints, per backend,
  the p50 of the engine's ``extract`` and ``choose`` stages and of the whole turn, and the ratio to the
  in-process embedded backend:

  - ``llamacpp``: the embedded GGUF in process (the baseline);
  - ``llamacpp-server``: the same GGUF behind llama-cpp-python's OpenAI-compatible server on loopback
    (``openai-compatible:...?format=json_object``), so the difference is HTTP, the server's own grammar
    sampler and its log-probabilities;
  - ``transformers``: the small Gemma 3 270M GGUF through transformers and Outlines (a different,
    smaller model: its figures show the backend's cost, not the same decisions).
* ``threads``: would two STAR workers on one thread each beat one on two threads? Times, on the embedded
  model after a 500-token prefix, a 55-token evaluation (a message reading's new dialogue lines) and a
  1-token one (a decoding step): first one process on ``--threads`` threads, then one process on one
  thread, then two one-thread processes at once. Two workers gain only where the two concurrent processes
  together do more than the one process on both threads.
* ``build``: how fast this interpreter's llama.cpp build evaluates a prompt and decodes (ms per token),
  on the embedded model. Run it under two virtual environments in turn (one build each) to compare
  builds on the same machine state; it prints the compiled CPU features and the medians over the rounds.

Run (``latency`` inside the model lock)::

    flock /tmp/sopagent-model.lock .venv/bin/python benchmarks/model_backends.py latency --turns 8
    .venv/bin/python benchmarks/model_backends.py threads --threads 2
    for r in 1 2 3; do
        .venv/bin/python benchmarks/model_backends.py build
        other/bin/python benchmarks/model_backends.py build
    done
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BACKENDS = ("llamacpp", "llamacpp-server", "transformers")
WORDS = ("customer account balance transfer booking hotel room doctor appointment weather forecast "
         "ride pickup restaurant table trivia question answer please thank you name number").split()
"""Filler words for prompts of a known length."""


def p50(values: list[float]) -> float:
    """The median, or NaN for no values."""
    return float(np.percentile(values, 50)) if values else float("nan")


def run_turns(model: Any, turns: int) -> dict[str, list[float]]:
    """Play the example conversations' turns on ``model``; return the stage latencies (ms)."""
    from sopagent import Agent, Store, load_policy
    from sopagent.convtest import load_test_file

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


def measure_latency(args: argparse.Namespace) -> None:
    """``latency``: per-stage p50 of the example turns on each backend, against the in-process one."""
    from sopagent.models import load_model
    from sopagent.models.embedded import embedded_model_path
    from sopagent.models.llamacpp_server import SERVER_MODEL_ALIAS, llamacpp_server

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


def thread_timings(threads: int, rounds: int) -> str:
    """The median ms of a 55-token and of a 1-token evaluation on ``threads`` threads, as one line."""
    from llama_cpp import Llama

    from sopagent.models.embedded import embedded_model_path

    llm = Llama(str(embedded_model_path()), n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False)
    tokens = llm.tokenize(" ".join(WORDS[i % len(WORDS)] for i in range(1000)).encode(), add_bos=False)
    llm.eval(tokens[:500])
    prefix = llm.n_tokens

    def timed(new: list[int]) -> float:
        """The median ms of evaluating ``new`` after the prefix, over the rounds."""
        times = []
        for _ in range(rounds):
            llm.n_tokens = prefix  # back to the prefix: the same evaluation each round
            started = time.perf_counter()
            llm.eval(new)
            times.append((time.perf_counter() - started) * 1000)
        return statistics.median(times)

    return f"{timed(tokens[500:555]):.0f} {timed(tokens[500:501]):.0f}"


def measure_threads(args: argparse.Namespace) -> None:
    """``threads``: one process on ``--threads`` threads against one and two one-thread processes."""
    if args.child:
        print(thread_timings(args.child, args.rounds), flush=True)
        return

    def run(threads: int, copies: int) -> list[list[float]]:
        """Start ``copies`` child processes on ``threads`` threads at once; their two medians each."""
        command = [sys.executable, __file__, "threads", "--child", str(threads), "--rounds", str(args.rounds)]
        children = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(copies)]
        return [[float(x) for x in child.communicate()[0].split()] for child in children]

    [both] = run(args.threads, 1)
    [single] = run(1, 1)
    pair = run(1, 2)
    print(f"one process, {args.threads} threads:  55 tokens {both[0]:6.0f} ms   1 token {both[1]:5.0f} ms")
    print(f"one process, 1 thread:    55 tokens {single[0]:6.0f} ms   1 token {single[1]:5.0f} ms")
    for number, figures in enumerate(pair, 1):
        print(f"two at once, 1 thread ({number}): 55 tokens {figures[0]:6.0f} ms   1 token {figures[1]:5.0f} ms")
    together = 2 / max(f[0] for f in pair)
    print(f"throughput of two one-thread workers / one {args.threads}-thread process: "
          f"evaluation {together * both[0]:.2f}x, decoding {2 / max(f[1] for f in pair) * both[1]:.2f}x")


def measure_build(args: argparse.Namespace) -> None:
    """``build``: prompt-evaluation and decoding speed (ms per token) of this interpreter's llama.cpp build."""
    from llama_cpp import Llama

    from sopagent.models.embedded import embedded_model_path
    from sopagent.models.llamacpp_build import compiled_features

    llama = Llama(model_path=str(embedded_model_path()), n_ctx=4096, n_threads=os.cpu_count() or 2,
                  n_threads_batch=os.cpu_count() or 2, verbose=False)
    text = " ".join(WORDS[i % len(WORDS)] for i in range(args.prompt_tokens * 2))
    tokens = llama.tokenize(text.encode(), add_bos=True)[: args.prompt_tokens]
    evals, decodes = [], []
    for _ in range(args.rounds):
        llama.reset()
        started = time.perf_counter()
        llama.eval(tokens)
        evals.append((time.perf_counter() - started) * 1000 / len(tokens))
        started = time.perf_counter()
        for _ in range(args.decode_tokens):
            llama.eval([llama.sample(temp=0.0)])
        decodes.append((time.perf_counter() - started) * 1000 / args.decode_tokens)
    features = " ".join(f for f in compiled_features().split(" | ") if f.startswith(("AVX", "AMX")))
    print(f"build {features or '?'}: prompt {statistics.median(evals):.2f} ms/token, "
          f"decode {statistics.median(decodes):.2f} ms/token ({args.prompt_tokens}-token prompt, {args.rounds} rounds)")


def main() -> None:
    """Parse the command line and run one measurement."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    text = "decision latency per model backend, against the in-process embedded model"
    latency = commands.add_parser("latency", help=text, description=text)
    latency.add_argument("--turns", type=int, default=12, help="turns to play on each backend")
    latency.add_argument("--backends", default=",".join(BACKENDS),
                         help="comma-separated subset of " + ", ".join(BACKENDS))
    text = "llama.cpp on the embedded model: one process on N threads against two one-thread processes"
    threads = commands.add_parser("threads", help=text, description=text)
    threads.add_argument("--threads", type=int, default=2, help="threads of the one-process baseline")
    threads.add_argument("--rounds", type=int, default=6, help="timed evaluations per figure (median)")
    threads.add_argument("--child", type=int, help=argparse.SUPPRESS)
    text = "prompt-evaluation and decoding speed of this interpreter's llama.cpp build"
    build = commands.add_parser("build", help=text, description=text)
    build.add_argument("--prompt-tokens", type=int, default=600, help="tokens of the evaluated prompt")
    build.add_argument("--decode-tokens", type=int, default=16, help="greedy tokens decoded after it")
    build.add_argument("--rounds", type=int, default=3, help="rounds (medians are printed)")
    args = parser.parse_args()
    measures: dict[str, Callable[[argparse.Namespace], None]] = {
        "latency": measure_latency, "threads": measure_threads, "build": measure_build}
    measures[args.command](args)


if __name__ == "__main__":
    main()
