"""Would two STAR workers on one thread each beat one on two threads? llama.cpp side by side.

Times, on the embedded model after a 500-token prefix, a 55-token evaluation (a message reading's
new dialogue lines) and a 1-token one (a decoding step): first one process on ``--threads`` threads,
then one process on one thread, then two one-thread processes at once. Two workers gain only where
the two concurrent processes together do more than the one process on both threads:

    .venv/bin/python benchmarks/llamacpp_threads.py
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

WORDS = ("customer account balance transfer booking hotel room doctor appointment weather forecast "
         "ride pickup restaurant table trivia question answer please thank you name number").split()


def measure(threads: int, rounds: int) -> str:
    """The median ms of a 55-token and of a 1-token evaluation on ``threads`` threads, as one line."""
    from llama_cpp import Llama

    from sopagent.models.embedded import embedded_model_path

    llm = Llama(str(embedded_model_path()), n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False)
    tokens = llm.tokenize(" ".join(WORDS[i % len(WORDS)] for i in range(1000)).encode(), add_bos=False)
    llm.eval(tokens[:500])
    prefix = llm.n_tokens

    def timed(new: list[int]) -> float:
        times = []
        for _ in range(rounds):
            llm.n_tokens = prefix  # back to the prefix: the same evaluation each round
            started = time.perf_counter()
            llm.eval(new)
            times.append((time.perf_counter() - started) * 1000)
        return statistics.median(times)

    return f"{timed(tokens[500:555]):.0f} {timed(tokens[500:501]):.0f}"


def main() -> None:
    """Print the three set-ups' figures side by side."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(measure(args.child, args.rounds), flush=True)
        return

    def run(threads: int, copies: int) -> list[list[float]]:
        command = [sys.executable, __file__, "--child", str(threads), "--rounds", str(args.rounds)]
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


if __name__ == "__main__":
    main()
