"""Two extra model readings for STAR, probed on the two 40-case samples (measured, not adopted).

Both are asked of the embedded model beside the recorded run of a cases JSONL, then scored by
replacing the recorded prediction where the reading would change it:

* ``closing``: "does the customer's latest message end the conversation?" (two letters, on the
  last three lines); where P(yes) reaches a threshold and the task's farewell (the action after
  SAM's ``user_*_goodbye``) is allowed, say the farewell. Prints the AUC against gold farewells and
  the accuracy per threshold.
* ``answered``: the first wording of the follow-up reading the policy now makes before asking a
  question ("has the customer already given this? copy it, else null", JSON ``{"answer": string or
  null}``, constrained); while an answer is given, go on along STAR's flowchart. The policy uses
  the fill-in wording of :data:`sopagent.eval.star.adapter.GIVEN_QUESTION` instead.

    .venv/bin/python benchmarks/star_readings.py closing star_full.cases.jsonl
    .venv/bin/python benchmarks/star_readings.py answered star_full.cases.jsonl
"""

from __future__ import annotations

import argparse
from typing import Any

from sopagent import prompts
from sopagent.eval.star.adapter import GivenAnswer, asks_customer, is_given
from sopagent.eval.star.data import Case, TaskSchema
from sopagent.eval.star.runner import transcript
from sopagent.models.base import ChatPrompt
from star_recorded import load_recorded_run, mean_accuracy

SYSTEM = "You read customer-support conversations and answer questions about them."
CLOSING = ("Question: does the customer's latest message end the conversation, that is, does the customer "
           "say goodbye or that they need nothing more?\nA) yes, the customer is finished\nB) no\n"
           "Answer with the letter only.")


def farewell(task: TaskSchema) -> str | None:
    """The action SAM's graph takes after the customer says goodbye."""
    return next((task.sam_graph[u] for u in task.user_nodes if u.endswith("goodbye") and u in task.sam_graph), None)


def probe_closing(model: Any, tasks: dict[str, TaskSchema], cases: list[Case], rows: dict[str, Any]) -> None:
    """AUC of P(closing) against gold farewells, and accuracy with the farewell rule per threshold."""
    read = [c for c in cases if c.history and c.history[-1].role == "customer"]
    p_yes = {}
    for case in read:
        lines = transcript(case.history)[-3:]
        context = "Conversation (latest lines):\n" + "\n".join(f"{role}: {text}" for role, text in lines)
        p_yes[case.case_id] = model.choose(ChatPrompt(SYSTEM, context, CLOSING), 2).probabilities[0]
    gold_farewell = [c for c in read if c.gold == farewell(tasks[c.task])]
    others = [c for c in read if c.gold != farewell(tasks[c.task])]
    pairs = [(p_yes[a.case_id], p_yes[b.case_id]) for a in gold_farewell for b in others]
    auc = sum((a > b) + 0.5 * (a == b) for a, b in pairs) / max(len(pairs), 1)
    print(f"{len(read)} customer messages, {len(gold_farewell)} answered with the farewell; AUC {auc:.3f}; "
          f"P(yes) from {min(p_yes.values()):.2f} to {max(p_yes.values()):.2f}")
    recorded = {c.case_id: rows[c.case_id]["pred"] for c in cases}
    print(f"recorded run: {mean_accuracy(cases, recorded):.1%}")
    for threshold in (0.40, 0.42, 0.44, 0.46, 0.48, 0.50):
        changed = dict(recorded)
        for case in read:
            action = farewell(tasks[case.task])
            if action and p_yes[case.case_id] >= threshold and action in rows[case.case_id]["allowed"]:
                changed[case.case_id] = action
        print(f"farewell at P(yes) >= {threshold:.2f}: {mean_accuracy(cases, changed):.1%}")


def probe_answered(model: Any, tasks: dict[str, TaskSchema], cases: list[Case], rows: dict[str, Any]) -> None:
    """Accuracy when questions whose answer the model finds in the conversation are skipped."""
    recorded = {c.case_id: rows[c.case_id]["pred"] for c in cases}
    changed, asked, given = dict(recorded), 0, 0
    for case in cases:
        if not case.history or case.history[-1].role != "customer":
            continue
        task, action, seen = tasks[case.task], recorded[case.case_id], set()
        context = prompts.transcript_text(transcript(case.history))
        while asks_customer(task, action) and action not in seen:
            seen.add(action)
            question = (f'The agent is about to ask the customer: "{task.text(action)}"\nHas the customer already '
                        "given this information anywhere in the conversation? If so, copy it from the customer's "
                        'words; if not, answer null. Reply as JSON: {"answer": ...}')
            answer = model.extract(ChatPrompt(SYSTEM, context, question), GivenAnswer).facts.answer
            asked += 1
            following = task.graph.get(action)
            if not is_given(answer):
                break
            given += 1
            if following not in rows[case.case_id]["allowed"]:
                break
            action = following
        changed[case.case_id] = action
    print(f"{asked} questions checked, an answer found for {given}")
    print(f"recorded run: {mean_accuracy(cases, recorded):.1%}; skipping answered questions: "
          f"{mean_accuracy(cases, changed):.1%}")


def main() -> None:
    """Run one probe on the two 40-case samples of a recorded run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("probe", choices=("closing", "answered"))
    parser.add_argument("cases_file", help="a recorded run's cases JSONL holding the two 40-case samples")
    parser.add_argument("data_dir", nargs="?", default="data/star")
    parser.add_argument("--model", help="model spec (default: the embedded model)")
    args = parser.parse_args()
    from sopagent.models import load_model

    run = load_recorded_run(args.cases_file, args.data_dir)
    cases = [c for c in run.cases if c.case_id in run.tuning]
    model = load_model(args.model)
    (probe_closing if args.probe == "closing" else probe_answered)(model, run.tasks, cases, run.rows)


if __name__ == "__main__":
    main()
