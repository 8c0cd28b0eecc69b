"""Tokens a STAR run makes the embedded model evaluate, counted without running it (deterministic).

With the prompt prefix kept in llama.cpp's KV cache, a reading evaluates only the tokens after the
longest prefix it shares with the previous prompt, and on 2 CPU cores its time is nearly
proportional to them (about 24 ms per token here). Timings of whole runs drift by 20% or more on
this shared machine from one run to the next, so prompt variants are compared here by the tokens
they cost: every case's reading prompt is built by the real harness (a recording model stands in
for the reader and answers uniformly; the prompts do not depend on its answers), rendered with the
GGUF's own chat template, tokenized, and the new tokens counted in the harness's order.

Variants, each against the harness as it runs: knowledge-base items shown with their bookkeeping
fields (``APIName``, ``id``), and knowledge-base queries shown with their parameters (both left out
of the conversation since the eighth session); the question after the dialogue (the harness before
the seventh session; the question is now told in the system text and nothing follows the dialogue).
Only the message readings are counted (follow-up readings depend on the model's answers).

    .venv/bin/python benchmarks/star_tokens.py [DATA_DIR] [--limit-per-domain N] [--ms-per-token 24]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import statistics
import tempfile
from pathlib import Path
from typing import Any, Iterator

from sopagent.eval.star import runner as star_runner
from sopagent.eval.star.data import load_cases, load_tasks, sample_cases
from sopagent.eval.star.metrics import percentile
from sopagent.eval.star.runner import Runner, UniformModel
from sopagent.models.base import ChatPrompt, Choice


class RecordingReader(UniformModel):
    """Answers every reading uniformly and keeps the prompt it was given."""

    name = "recording"

    def __init__(self) -> None:
        self.prompts: list[ChatPrompt] = []

    def choose(self, prompt: ChatPrompt, n_options: int) -> Choice:
        """Record the prompt; every option equally likely."""
        self.prompts.append(prompt)
        return super().choose(prompt, n_options)


@contextlib.contextmanager
def variant(name: str) -> Iterator[None]:
    """Patch the harness for one variant while the prompts are recorded."""
    original_transcript, original_build = star_runner.transcript, star_runner.build_policy
    if name == "knowledge-base bookkeeping shown":
        star_runner.transcript = functools.partial(original_transcript, hidden_fields=())
    elif name == "query with its parameters":
        star_runner.transcript = functools.partial(original_transcript, query_parameters=True)
    elif name == "question after the dialogue":
        def build_policy(task: Any, folder: Path) -> Any:
            return original_build(task, folder, question_in_system=False)

        star_runner.build_policy = build_policy
    try:
        yield
    finally:
        star_runner.transcript, star_runner.build_policy = original_transcript, original_build


def count(prompts: list[str], tokenize: Any) -> list[int]:
    """New tokens of each prompt after the longest prefix shared with the previous one."""
    new: list[int] = []
    previous: list[int] = []
    for text in prompts:
        tokens = tokenize(text)
        shared = 0
        for a, b in zip(previous, tokens):
            if a != b:
                break
            shared += 1
        new.append(len(tokens) - shared)
        previous = tokens
    return new


def main() -> None:
    """Count and print per variant."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", nargs="?", default="data/star")
    parser.add_argument("--limit-per-domain", type=int, help="a sample (default: every case)")
    parser.add_argument("--ms-per-token", type=float, default=24.0,
                        help="measured cost of one new token, for the time estimate")
    args = parser.parse_args()
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    from sopagent.models.embedded import embedded_model_path

    data = Path(args.data_dir)
    tasks = load_tasks(data)
    vocab = Llama(model_path=str(embedded_model_path()), vocab_only=True, verbose=False)
    formatter = Jinja2ChatFormatter(template=vocab.metadata["tokenizer.chat_template"],
                                    eos_token=vocab._model.token_get_text(vocab.token_eos()), bos_token="")

    def tokenize(text: str) -> list[int]:
        return vocab.tokenize(text.encode(), add_bos=False, special=True)

    figures: dict[str, list[int]] = {}
    for name in ("as the harness runs", "knowledge-base bookkeeping shown", "query with its parameters",
                 "question after the dialogue"):
        reader = RecordingReader()
        with variant(name), tempfile.TemporaryDirectory() as tmp:
            cases = sample_cases(load_cases(data, tasks), args.limit_per_domain)
            Runner(tasks, reader, Path(tmp), Path(tmp) / "cases.jsonl").run(cases)
        rendered = [formatter(messages=p.messages()).prompt for p in reader.prompts]
        figures[name] = count(rendered, tokenize)
    print(f"{len(cases)} cases, {len({c.task for c in cases})} tasks")
    base = sum(next(iter(figures.values())))
    for name, new in figures.items():
        total = sum(new)
        print(f"{name:<42} readings {len(new):5d}  new tokens total {total:8d} ({total / base:5.1%})  "
              f"p50 {statistics.median(new):5.0f}  p95 {percentile(new, 95):5.0f}  "
              f"estimate {total * args.ms_per_token / 60000:5.1f} min at {args.ms_per_token:g} ms/token")


if __name__ == "__main__":
    main()
