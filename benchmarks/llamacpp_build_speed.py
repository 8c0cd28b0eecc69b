"""How fast this interpreter's llama.cpp build evaluates a prompt and decodes, on the embedded model.

Run it under two virtual environments in turn (one build each) to compare builds side by side on the
same machine state; it prints one line per round and the medians:

    for r in 1 2 3; do .venv/bin/python benchmarks/llamacpp_build_speed.py; other/bin/python benchmarks/llamacpp_build_speed.py; done
"""

from __future__ import annotations

import argparse
import statistics
import time

from llama_cpp import Llama

from sopagent.models.embedded import embedded_model_path
from sopagent.models.llamacpp_build import compiled_features

WORDS = ("customer account balance transfer booking hotel room doctor appointment weather forecast "
         "ride pickup restaurant table trivia question answer please thank you name number").split()


def main() -> None:
    """Print prompt-evaluation and decoding speed (ms per token) of this build, over a few rounds."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt-tokens", type=int, default=600)
    parser.add_argument("--decode-tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    path = embedded_model_path()
    import os

    llama = Llama(model_path=str(path), n_ctx=4096, n_threads=os.cpu_count() or 2,
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


if __name__ == "__main__":
    main()
