"""``sopagent eval star`` end to end on a small sample: structure, resume, audit (no quality number).

Runs the real engine and a real SQLite audit store with the no-model ``uniform`` backend, and the
engine's replay entry point with the scripted test model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sopagent.cli import main
from sopagent.eval.star.adapter import GIVEN_QUESTION
from sopagent.eval.star.data import Event, load_tasks
from sopagent.eval.star.runner import Runner
from sopagent.models.scripted import ScriptedModel
from sopagent.prompts import READING_SYSTEM
from sopagent.store import Store

DATA = Path(__file__).resolve().parent.parent / "data" / "star"
pytestmark = pytest.mark.skipif(not (DATA / "tasks").is_dir(), reason="STAR data folder not present")


def _run(tmp_path: Path, *extra: str) -> int:
    return main(["eval", "star", str(DATA), "--limit-per-domain", "3", "--model", "uniform", "--quiet",
                 "--out", str(tmp_path / "results.json"), *extra])


def test_results_structure_and_every_prediction_in_the_allowed_set(tmp_path, capsys):
    assert _run(tmp_path) == 0
    summary = json.loads((tmp_path / "results.json").read_text())
    assert set(summary["domains"]) == {t.domain for t in load_tasks(DATA).values()}
    for figures in summary["domains"].values():
        assert figures["cases"] == 3
        for key in ("accuracy", "weighted_f1", "gate_recall"):
            assert 0.0 <= figures[key] <= 1.0
        assert figures["violations"] == 0
    assert 0.0 <= summary["mean_accuracy"] <= 1.0 and 0.0 <= summary["mean_weighted_f1"] <= 1.0
    rows = [json.loads(line) for line in (tmp_path / "results.cases.jsonl").read_text().splitlines()]
    assert len(rows) == summary["cases"] == 3 * len(summary["domains"])
    assert all(r["pred"] in r["allowed"] for r in rows)
    out = capsys.readouterr().out
    assert "mean" in out and "VIOLATION" not in out


def test_resume_skips_done_cases(tmp_path):
    assert _run(tmp_path) == 0
    cases_file = tmp_path / "results.cases.jsonl"
    lines = cases_file.read_text().splitlines()
    cases_file.write_text("\n".join(lines[:-4]) + "\n" + lines[-4][:10])  # interrupted mid-line
    assert _run(tmp_path) == 0
    now = cases_file.read_text().splitlines()
    assert len(now) == len(lines) + 1  # the torn line stays (ignored), the 4 cases are redone
    again = [json.loads(x) for x in now[: len(lines) - 4]]
    rerun = [json.loads(x) for x in now[len(lines) - 3:]]
    assert [r["case_id"] for r in again] == [json.loads(x)["case_id"] for x in lines[:-4]]
    assert sorted(r["case_id"] for r in rerun) == sorted(json.loads(x)["case_id"] for x in lines[-4:])
    before = cases_file.read_text()
    assert _run(tmp_path) == 0
    assert cases_file.read_text() == before  # nothing left to do: nothing appended


def test_resume_goes_on_in_the_conversation_of_a_dialogue_cut_short(tmp_path):
    assert _run(tmp_path) == 0
    cases_file = tmp_path / "results.cases.jsonl"
    rows = [json.loads(x) for x in cases_file.read_text().splitlines()]
    cut = max(i for i in range(1, len(rows)) if rows[i]["dialogue_id"] == rows[i - 1]["dialogue_id"])
    dialogue = rows[cut]["dialogue_id"]
    cases_file.write_text("".join(json.dumps(r) + "\n" for r in rows[:cut]))
    assert _run(tmp_path) == 0
    from sqlmodel import select

    from sopagent.store.tables import Conversation

    store = Store(f"sqlite:///{tmp_path / 'results.cases.work' / 'audit.db'}")
    with store.session() as session:
        found = session.exec(select(Conversation).where(Conversation.customer_ref == f"star:{dialogue}")).all()
    assert len(found) == 1  # what the policy remembered in the dialogue carries on after the resume
    assert len(store.decisions(found[0].id)) == sum(r["dialogue_id"] == dialogue for r in rows) + 1


def test_an_answer_found_once_is_not_read_again_in_the_same_conversation(tmp_path):
    row, model, store, conversation, task = _replay_dob_case(tmp_path, "14 March 1985", "null", "null",
                                                             repeat=2)
    following = task.graph["bank_ask_dob"]
    assert row["pred"] == following
    first, second = store.decisions(conversation)
    assert len(json.loads(first.facts_json)["follow_up_readings"]) == 2
    # the second decision knows the date of birth from the first: it reads only the next question
    readings = json.loads(second.facts_json)["follow_up_readings"]
    assert [r["question"] for r in readings] == [json.loads(first.facts_json)["follow_up_readings"][1]["question"]]
    assert json.loads(store.get_conversation(conversation).known_json)["star_given"] == {
        "bank_ask_dob": "14 March 1985"}
    assert len(model.prompts) == 5 and store.verify_chain().intact


def _replay_dob_case(tmp_path: Path, *answers: str | None,
                     repeat: int = 1) -> tuple[dict, ScriptedModel, Store, str, object]:
    """A bank_balance case whose reading leads to asking the date of birth; ``answers`` are the scripted
    follow-up readings of whether the customer already gave what each question asks. ``repeat``: the
    case is decided that many times in one conversation (the last row is returned)."""
    tasks = load_tasks(DATA)
    task = tasks["bank_balance"]
    kinds = task.user_nodes
    target = next(n for n in kinds if task.sam_graph.get(n) == "bank_ask_dob")
    probabilities = [0.9 if n == target else 0.1 / (len(kinds) - 1) for n in kinds]
    model = ScriptedModel(facts=[{"answer": a} for a in answers], choices=[probabilities] * repeat)
    runner = Runner({"bank_balance": task}, model, tmp_path / "work", tmp_path / "cases.jsonl")
    from sopagent.eval.star.data import Case

    history = (Event("customer", "hi, my balance please"), Event("agent", task.text("hello"), action="hello"),
               Event("customer", "I do not remember my PIN"))
    case = Case("x-0", 1, 0, "bank_balance", history, "bank_ask_dob")
    conversation = runner.agent("bank_balance").start()
    for _ in range(repeat):
        row = runner.run_case(case, conversation)
    assert row["label"] == target and row["pred"] in row["allowed"]
    return row, model, Store(f"sqlite:///{tmp_path / 'work' / 'audit.db'}"), conversation, task


def test_replay_reads_the_message_with_one_choice_and_records_it_in_the_audit_chain(tmp_path):
    row, model, store, conversation, task = _replay_dob_case(tmp_path, None)
    assert row["pred"] == "bank_ask_dob"
    # one one-token reading of the message, then one short JSON reading: is the answer already there?
    assert len(model.prompts) == 2
    prompt, follow_up = model.prompts
    # the message is the dialogue's last line, and nothing follows it: the question is in the system
    # text with the kinds, in the cached prefix (fewer tokens evaluated per reading)
    assert prompt.context.endswith("Customer: I do not remember my PIN") and prompt.task == ""
    assert prompt.messages()[-1]["content"] == prompt.context
    assert "A) " in prompt.system and "customer's latest message?" in prompt.system
    # the follow-up sees the same conversation, not the kinds' example texts, and quotes the question
    # the agent is about to ask
    assert follow_up.context == prompt.context and follow_up.system == READING_SYSTEM
    assert "A) " not in follow_up.system
    assert f'"{task.text("bank_ask_dob")}"' in follow_up.task
    assert follow_up.task == GIVEN_QUESTION.format(question=task.text("bank_ask_dob"))  # the adopted wording
    assert store.verify_chain().intact
    decision = store.decisions(conversation)[0]
    assert decision.response_id == "bank_ask_dob" and decision.customer_text == "I do not remember my PIN"
    readings = json.loads(decision.facts_json)["follow_up_readings"]
    assert [r["answer"] for r in readings] == [{"answer": None}]


def test_a_question_the_customer_already_answered_is_not_asked(tmp_path):
    # the date of birth is in the conversation (by the reading), the next question's answer is not
    row, model, store, conversation, task = _replay_dob_case(tmp_path, "14 March 1985", "null")
    following = task.graph["bank_ask_dob"]
    assert row["pred"] == following != "bank_ask_dob" and row["error"] is None
    decision = store.decisions(conversation)[0]
    assert decision.response_id == following and decision.chosen_by == "policy"
    readings = json.loads(decision.facts_json)["follow_up_readings"]
    assert [r["answer"]["answer"] for r in readings] == ["14 March 1985", "null"]
    assert row["follow_up_readings"] == readings  # in the cases JSONL too
    assert f'"{task.text(following)}"' in readings[1]["question"]
    assert len(model.prompts) == 3 and store.verify_chain().intact


@pytest.mark.model
def test_real_model_reads_star_messages_inside_the_allowed_set(tmp_path, embedded_model):
    # The harness's real path: the embedded model through llama.cpp and Outlines reads each
    # customer message as one of the task's kinds; no quality number is asserted.
    from sopagent.eval.star.data import load_cases, sample_cases

    tasks = load_tasks(DATA)
    cases = [c for c in sample_cases(load_cases(DATA, tasks), 3) if c.domain in ("bank", "weather")]
    runner = Runner({c.task: tasks[c.task] for c in cases}, embedded_model, tmp_path / "work",
                    tmp_path / "cases.jsonl")
    rows = runner.run(cases)
    assert len(rows) == len(cases) == 6
    assert all(row["pred"] in row["allowed"] for row in rows)
    read = [row for row in rows if row["model_call"]]
    assert read, "the sample has no customer message to read"
    for row in read:
        assert row["label"] in tasks[row["task"]].user_nodes
        assert abs(sum(row["kind_probabilities"].values()) - 1.0) < 1e-3
    assert runner.store.verify_chain().intact


def test_audit_replay_reads_a_one_of_step_with_one_choice_as_the_engine_does(tmp_path):
    from sopagent.audit.replay import replay
    from sopagent.eval.star.adapter import build_policy

    row, _, store, conversation, task = _replay_dob_case(tmp_path, None)
    kinds = task.user_nodes
    model = ScriptedModel(facts=[{"answer": None}], choices=[[1.0 / len(kinds)] * len(kinds)])
    report = replay(store, build_policy(task, tmp_path / "replayed"), model_factory=lambda: model)
    assert report.turns == 1 and report.model_calls == 1 and not report.skipped
    # the stored history differs from the STAR transcript, so the message is read again: as the
    # engine reads it (one lettered choice, the question in the system text), not as JSON
    reading = model.prompts[0]
    assert reading.task == "" and "customer's latest message?" in reading.system
    assert not model.choices  # the scripted choice was used


def test_the_conversation_shows_a_knowledge_base_query_by_its_label_only():
    from sopagent.eval.star.data import QUERY_LABELS, load_cases
    from sopagent.eval.star.runner import ROLE_NAMES, transcript

    tasks = load_tasks(DATA)
    case = next(c for c in load_cases(DATA, tasks) if any(e.action in QUERY_LABELS for e in c.history))
    lines = transcript(case.history)
    for event, (role, text) in zip(case.history, lines):
        assert role == ROLE_NAMES[event.role]
        if event.role == "agent" and event.action in QUERY_LABELS:
            assert text == f"[{event.action}]" and event.text != text  # the parameters stay in the event
        elif event.role != "backend" or not event.item:
            assert text == event.text
