"""STAR replay: the seventh session's two speed-ups, each added in turn, side by side.

The variants: as before (the message reading's question after the dialogue, every JSON token
decoded); the question in the system text (nothing follows the dialogue); and the JSON answers'
opening prefilled as well (decoding from after ``{"answer":``, stopped at the closing brace). They
run the same cases in one process, each on its own llama.cpp contexts of the same weights (so each
keeps its own prompt prefixes cached), dialogue by dialogue, in a rotating order, so that the
machine's drift falls on all alike. Prints per variant: decision time, new prompt tokens and
decoded tokens the model evaluated (both lanes), and accuracy on these cases.

    .venv/bin/python benchmarks/star_question_place.py --limit-per-domain 20
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import Any, Callable

from sopagent.eval.star.adapter import build_policy
from sopagent.eval.star.data import Case, load_cases, load_tasks, sample_cases
from sopagent.eval.star.runner import Runner
from sopagent.models import load_model

VARIANTS = {  # name: (question in the system text, JSON opening prefilled)
    "as before": (False, False),
    "question in the system text": (True, False),
    "and JSON opening prefilled": (True, True),
}


@dataclass
class Tally:
    """What one variant cost and scored."""

    latencies_ms: list[float] = field(default_factory=list)
    right: int = 0
    new_tokens: int = 0
    decoded_tokens: int = 0


class VariantRunner(Runner):
    """The harness's runner with the question placed as the variant says."""

    question_in_system: bool = True

    def policy(self, task: str) -> Any:
        """The task's policy, built for this variant."""
        return build_policy(self.tasks[task], self.workdir / "catalogs", question_in_system=self.question_in_system)


def count_tokens(model: Any, tally: Tally) -> None:
    """Add every llama.cpp call's new prompt tokens and decoded tokens of ``model`` to ``tally``."""
    generate: Callable[..., Any] = model._generate

    def counted(*args: Any, **kwargs: Any) -> Any:
        out, stats, finish = generate(*args, **kwargs)
        tally.new_tokens += stats.prompt_tokens - stats.reused_tokens
        tally.decoded_tokens += stats.generated_tokens
        return out, stats, finish

    model._generate = counted


def main() -> None:
    """Run the variants and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", nargs="?", default="data/star")
    parser.add_argument("--limit-per-domain", type=int, default=20, metavar="N")
    parser.add_argument("--sample-offset", type=int, default=0, metavar="K")
    parser.add_argument("--model", help="model spec (default: the embedded model)")
    args = parser.parse_args()
    data = Path(args.data_dir)
    tasks = load_tasks(data)
    cases = sorted(sample_cases(load_cases(data, tasks), args.limit_per_domain, args.sample_offset),
                   key=lambda c: c.task)  # as the harness runs them: by task, dialogue order kept
    dialogues: list[list[Case]] = [list(group) for _, group in groupby(cases, key=lambda c: c.dialogue_id)]
    tallies = {name: Tally() for name in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        runners: dict[str, VariantRunner] = {}
        for index, (name, (in_system, prefill)) in enumerate(VARIANTS.items()):
            model = load_model(args.model)
            for backend in (model, model.reading_lane()) if callable(getattr(model, "reading_lane", None)) else (model,):
                count_tokens(backend, tallies[name])
                backend.prefill_json = prefill
            runner = VariantRunner(tasks, model, Path(tmp) / str(index), Path(tmp) / f"{index}.jsonl")
            runner.question_in_system = in_system
            runners[name] = runner
        names = list(VARIANTS)
        for number, dialogue in enumerate(dialogues, start=1):
            for name in names[number % len(names):] + names[:number % len(names)]:
                runner = runners[name]
                conversation = runner.conversation(dialogue[0], resume=False)
                for case in dialogue:
                    row = runner.run_case(case, conversation)
                    tallies[name].latencies_ms.append(row["latency_ms"])
                    tallies[name].right += row["pred"] == row["gold"]
            print(f"\r{number}/{len(dialogues)} dialogues", end="", flush=True)
    print(f"\n{len(cases)} cases, {len(dialogues)} dialogues, each variant on its own llama.cpp context")
    baseline = tallies[names[0]]
    for name, tally in tallies.items():
        total = sum(tally.latencies_ms)
        print(f"{name:<28} decisions {total / 1000:7.1f} s ({total / sum(baseline.latencies_ms):.2f}x)  "
              f"median {statistics.median(tally.latencies_ms):6.0f} ms  new prompt tokens {tally.new_tokens:7d} "
              f"({tally.new_tokens / baseline.new_tokens:.2f}x)  decoded {tally.decoded_tokens:6d}  "
              f"accuracy {tally.right / len(cases):.1%}")


if __name__ == "__main__":
    main()
