"""The STAR adapter on the real STAR task files: catalogs, graph-derived allowed sets, the procedure.

No model is loaded. The data folder is ``data/star`` of the repository (STAR, MIT; see its README).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sopagent.catalog import parse_catalog
from sopagent.errors import EvalDataError
from sopagent.eval.star import gate
from sopagent.eval.star.adapter import (
    CLOSER_QUESTION,
    DEFAULT_SETTINGS,
    GIVEN_QUESTION,
    GivenAnswer,
    StarSettings,
    after_answer,
    asks_customer,
    build_policy,
    catalog_yaml,
    closing_actions,
    is_question,
    kind_weights,
    message_kinds,
    next_action,
    score_actions,
    settle_close_call,
    skip_answered,
    skip_given,
    step_name,
)
from sopagent.eval.star.baseline import match_reply
from sopagent.eval.star.data import (
    KB_BOOKKEEPING_FIELDS,
    QUERY_LABELS,
    Event,
    format_item,
    load_cases,
    load_tasks,
    sample_cases,
)
from sopagent.policy import OneOf

DATA = Path(__file__).resolve().parent.parent / "data" / "star"
pytestmark = pytest.mark.skipif(not (DATA / "tasks").is_dir(), reason="STAR data folder not present")


@pytest.fixture(scope="module")
def tasks():
    return load_tasks(DATA)


@pytest.fixture(scope="module")
def cases(tasks):
    return load_cases(DATA, tasks)


def test_every_task_becomes_a_valid_policy_and_catalog(tasks, tmp_path):
    for task in tasks.values():
        catalog = parse_catalog(catalog_yaml(task))
        assert list(catalog.responses) == task.actions
        for action in task.actions:
            if action in QUERY_LABELS:
                assert "not sent to the customer" in catalog[action].description
            else:  # the exact STAR text, template braces kept literal
                assert catalog[action].render({}) == task.text(action)
        policy = build_policy(task, tmp_path)
        assert set(policy.steps) == {step_name(None)} | {step_name(a) for a in task.actions}
        assert len(message_kinds(task)) == len(task.user_nodes)


def test_gate_holds_the_graph_successor_of_the_last_action(tasks):
    for task in tasks.values():
        for action, successor in task.graph.items():
            if action not in task.actions or successor not in task.actions:
                continue
            history = (Event("agent", task.text(action), action=action), Event("customer", "ok"))
            assert successor in gate.allowed_actions(task, history), (task.name, action)


def test_gate_holds_what_follows_each_kind_of_customer_message(tasks):
    for task in tasks.values():
        history = (Event("customer", "hi"),)
        allowed = gate.allowed_actions(task, history)
        assert set(allowed) <= set(task.actions)
        for node in task.user_nodes:
            if task.sam_graph.get(node) in task.actions:
                assert task.sam_graph[node] in allowed


def test_result_items_are_matched_to_their_result_node(tasks):
    checked = 0
    for task in tasks.values():
        for node in task.db_nodes:
            fields = gate._result_fields(task.sam_replies[node])
            item = {k: (v if not v.startswith("[") else "x") for k, v in fields.items()}
            if not item:  # an empty result: the task's "nothing found" reply, tested below
                continue
            literal = {k for k, v in fields.items() if k != "APIName" and not v.startswith("[")}
            others = [gate._result_fields(task.sam_replies[n]) for n in task.db_nodes if n != node]
            if literal or all(set(o) != set(fields) for o in others):
                assert gate.result_node(task, item) == node, (task.name, node)
                checked += 1
    assert checked >= len(tasks)


def test_empty_result_leads_to_a_nothing_found_reply(tasks):
    for task in tasks.values():
        history = (Event("customer", "hi"), Event("agent", "[query]", action="query"), Event("backend", "no result", item={}))
        allowed = gate.allowed_actions(task, history)
        chosen = next_action(task, history, None, {}, allowed)
        assert chosen in allowed
        if gate.nothing_found_actions(task):
            assert chosen in gate.nothing_found_actions(task)


def test_procedure_follows_the_kind_of_message_the_model_read(tasks):
    for task in tasks.values():
        for action in task.actions:
            history = (Event("customer", "hello"), Event("agent", task.text(action), action=action),
                       Event("customer", "..."))
            allowed = gate.allowed_actions(task, history)
            for node in task.user_nodes:
                target = task.sam_graph.get(node)
                if target in allowed and not (target == action and is_question(task, target)):
                    chosen = next_action(task, history, node, {node: 1.0}, allowed)
                    assert chosen == target, (task.name, action, node)


def two_unexpected_kinds(task, history, allowed):
    """Two kinds of message the graph does not expect here, leading to two different allowed actions."""
    expected = set(gate.expected_user_nodes(task, gate.last_action(history)))
    seen: dict[str, str] = {}
    for node in task.user_nodes:
        target = task.sam_graph.get(node)
        if node in expected or target not in allowed or target in seen.values():
            continue
        seen[node] = target
        if len(seen) == 2:
            return list(seen)
    return None


class ScriptedCloser:
    """Plays the close-call reading: gives the second kind ``p_second``, and records what was asked."""

    def __init__(self, p_second: float) -> None:
        self.p_second = p_second
        self.asked: list[tuple[str, list[str]]] = []

    def __call__(self, question: str, schema: type[OneOf]) -> OneOf:
        first, second = schema.options
        self.asked.append((question, [first, second]))
        probabilities = {first: 1 - self.p_second, second: self.p_second}
        return schema(label=max(probabilities, key=probabilities.__getitem__), probabilities=probabilities)


def message_after_hello(task):
    """A dialogue where the agent greeted and the customer wrote, and the allowed set after it."""
    history = (Event("customer", "hello"), Event("agent", task.text("hello"), action="hello"),
               Event("customer", "..."))
    return history, gate.allowed_actions(task, history)


def test_a_close_call_is_read_again_between_only_the_two_kinds_behind_it(tasks):
    checked = 0
    for task in tasks.values():
        history, allowed = message_after_hello(task)
        pair = two_unexpected_kinds(task, history, allowed)
        if pair is None:
            continue
        first, second = pair
        close = {first: 0.5, second: 0.5 * (DEFAULT_SETTINGS.close_call_ratio + 0.1)}
        scores = score_actions(task, history, close)
        ranked = sorted((a for a in scores if a in allowed), key=lambda a: -scores[a])
        assert ranked[:2] == [task.sam_graph[first], task.sam_graph[second]]
        for p_second, expected in ((0.7, ranked[1]), (0.3, ranked[0])):
            read = ScriptedCloser(p_second)
            assert settle_close_call(task, history, close, ranked, scores, read) == expected
            assert read.asked == [(CLOSER_QUESTION, [first, second])]
        # the bar for the second kind is a setting
        read = ScriptedCloser(0.45)
        lower_bar = StarSettings(second_kind_above=0.4)
        assert settle_close_call(task, history, close, ranked, scores, read, lower_bar) == ranked[1]
        assert settle_close_call(task, history, close, ranked, scores, read) == ranked[0]
        # not a close call: no second reading, the best action stands
        clear = {first: 0.5, second: 0.5 * (DEFAULT_SETTINGS.close_call_ratio - 0.1)}
        read = ScriptedCloser(1.0)
        scores = score_actions(task, history, clear)
        assert settle_close_call(task, history, clear, ranked, scores, read) == ranked[0] and read.asked == []
        # next_action asks through the reader it is given, and only with a ratio set
        read = ScriptedCloser(0.7)
        next_action(task, history, first, close, allowed, read=read)
        assert len(read.asked) == 1
        next_action(task, history, first, close, allowed, read=read, settings=StarSettings(close_call_ratio=None))
        assert len(read.asked) == 1
        checked += 1
    assert checked >= len(tasks) // 2


def test_questions_already_answered_are_not_asked_again(tasks):
    checked = 0
    for task in tasks.values():
        for action in task.actions:
            following = task.graph.get(action)
            if not is_question(task, action) or following is None:
                continue
            answers = [u for u in task.user_nodes if task.sam_r_graph.get(u) == action and "inform" in u]
            history = (Event("customer", "hello"), Event("agent", task.text(action), action=action),
                       Event("customer", "..."))
            allowed = gate.allowed_actions(task, history)
            if following not in allowed:
                continue
            # asked before: go on along the flowchart (possibly further, past other answered questions)
            assert skip_answered(task, history, action, None, {}, allowed) != action
            # asked for the first time and the message does not carry the answer: ask it
            fresh = history[:1] + history[2:]
            assert skip_answered(task, fresh, action, None, {}, gate.allowed_actions(task, fresh)) == action
            # the message carries the answer (the model gives its kind weight): go on
            given = {answers[0]: 0.5}
            assert skip_answered(task, fresh, action, None, given, gate.allowed_actions(task, fresh)) != action
            # a reading that gives the answer's kind less than the threshold: ask it
            faint = {answers[0]: DEFAULT_SETTINGS.answered_threshold * 0.9}
            assert skip_answered(task, fresh, action, None, faint, gate.allowed_actions(task, fresh)) == action
            checked += 1
    assert checked >= len(tasks)


def test_a_follow_up_reading_goes_on_only_past_answers_found(tasks):
    task = tasks["bank_balance"]
    history = (Event("customer", "hi, I'm Ann Lee, my balance please"),)
    allowed = gate.allowed_actions(task, history)
    following = task.graph["ask_name"]
    for null in ("null", "None", "n/a."):
        asked: list[str] = []

        def read(question: str, schema: type[GivenAnswer], null: str = null) -> GivenAnswer:
            asked.append(question)
            return GivenAnswer(answer="Ann Lee" if len(asked) == 1 else null)

        given: dict[str, str] = {}
        assert skip_given(task, "ask_name", allowed, read, given) == following
        assert asked == [GIVEN_QUESTION.format(question=task.text(a)) for a in ("ask_name", following)]
        assert given == {"ask_name": "Ann Lee"}
    # an answer found earlier in the conversation is not read again
    asked = []
    skip_given(task, "ask_name", allowed, read, {"ask_name": "Ann Lee"})
    assert asked[0] == GIVEN_QUESTION.format(question=task.text(following))


def test_answers_given_at_once_lead_on_in_sams_order_to_the_query(tasks):
    # ride_book: STAR's graph asks destination, then departure, then sends "I can also filter for ...";
    # SAM's flowchart asks departure, then destination, then queries
    task = tasks["ride_book"]
    history = (Event("customer", "I'm Ann, I need a ride from the airport to the university"),)
    allowed = gate.allowed_actions(task, history)
    asked: list[str] = []

    def read(question: str, schema: type[GivenAnswer]) -> GivenAnswer:
        asked.append(question)
        return GivenAnswer(answer="given")

    end = skip_given(task, "ask_name", allowed, read, {})
    walk = ["ask_name"]
    while asks_customer(task, walk[-1]) and after_answer(task, walk[-1]) not in walk:
        walk.append(after_answer(task, walk[-1]))
    assert asked == [GIVEN_QUESTION.format(question=task.text(a)) for a in walk[:-1] if asks_customer(task, a)]
    assert end == walk[-1]
    assert end in QUERY_LABELS and walk.index("ride_ask_departure") < walk.index("ride_ask_destination")


def test_stars_graph_decides_where_sams_flowchart_gives_no_single_next_action(tasks):
    differ = 0
    for task in tasks.values():
        for action in task.actions:
            if not asks_customer(task, action):
                continue
            following = {task.sam_graph[u] for u in task.user_nodes
                         if task.sam_r_graph.get(u) == action and "inform" in u and u in task.sam_graph}
            if len(following) == 1:
                assert after_answer(task, action) == following.pop()
            else:
                assert after_answer(task, action) == task.graph.get(action)
            differ += after_answer(task, action) != task.graph.get(action)
    assert differ >= 2  # the flowcharts disagree somewhere in these domains


def test_prediction_is_always_in_the_gate_and_the_gate_is_neither_tiny_nor_everything(tasks, cases):
    hits, sizes = 0, []
    for case in cases:
        task = tasks[case.task]
        allowed = gate.allowed_actions(task, case.history)
        uniform = {n: 1.0 / max(1, len(task.user_nodes)) for n in task.user_nodes}
        assert next_action(task, case.history, None, uniform, allowed) in allowed
        hits += case.gold in allowed
        sizes.append(len(allowed))
    assert hits / len(cases) > 0.8, "the gate got too strict: it caps accuracy"
    mean_size = sum(sizes) / len(sizes)
    mean_actions = sum(len(tasks[c.task].actions) for c in cases) / len(cases)
    assert mean_size < 0.75 * mean_actions, "the gate allows nearly everything"


def test_cases_follow_the_protocol(cases):
    assert all(c.history is not None and c.gold for c in cases)
    queries = [c for c in cases if c.gold in QUERY_LABELS]
    assert queries and all(c.history for c in queries)
    # nothing from a guide or from the case itself leaks into the history
    for case in cases[:300]:
        assert all(e.role in ("customer", "agent", "backend") for e in case.history)


def test_sample_is_deterministic_and_per_domain(cases):
    first = sample_cases(cases, 5)
    assert [c.case_id for c in first] == [c.case_id for c in sample_cases(list(cases), 5)]
    counts: dict[str, int] = {}
    for case in first:
        counts[case.domain] = counts.get(case.domain, 0) + 1
    assert set(counts.values()) == {5}


def test_baseline_matches_only_exact_approved_replies(tasks):
    task = tasks["bank_balance"]
    allowed = ["bank_inform_balance", "anything_else", "query"]
    assert match_reply(task, allowed, "Is there anything else that I can do for you?") == "anything_else"
    assert match_reply(task, allowed, "Your current balance is 1,234 in credit.") == "bank_inform_balance"
    assert match_reply(task, allowed, "QUERY") == "query"
    assert match_reply(task, allowed, "Anything else I can help with?") is None
    assert match_reply(task, ["anything_else"], "Your current balance is 5 in credit.") is None


def test_a_task_without_a_sam_schema_still_runs_on_the_graph_alone(tmp_path):
    from sopagent.eval.star.data import load_task

    task = load_task(DATA / "tasks" / "weather.json", None)
    assert task.user_nodes == [] and task.db_nodes == []
    policy = build_policy(task, tmp_path)
    assert all(not step.facts.model_fields for step in policy.steps.values())  # nothing for a model to read
    for action, successor in task.graph.items():
        if action in task.actions and successor in task.actions:
            history = (Event("customer", "hi"), Event("agent", task.text(action), action=action),
                       Event("customer", "ok"))
            allowed = gate.allowed_actions(task, history)
            assert next_action(task, history, None, {}, allowed) == successor


def test_offset_samples_share_no_dialogue(cases):
    """The first three 40-case samples: 40 cases per domain each, no dialogue in two of them (an
    earlier version skipped whole dialogues by count, and its third sample took 3 of the second's)."""
    samples = [sample_cases(cases, 40, offset_per_domain=k) for k in (0, 40, 80)]
    dialogues = [{c.dialogue_id for c in sample} for sample in samples]
    for i in range(3):
        for j in range(i + 1, 3):
            assert dialogues[i].isdisjoint(dialogues[j]), (i, j)
    for sample in samples:
        counts: dict[str, int] = {}
        for case in sample:
            counts[case.domain] = counts.get(case.domain, 0) + 1
        assert set(counts.values()) == {40}


def test_an_offset_that_is_not_a_whole_sample_is_refused(cases):
    with pytest.raises(EvalDataError, match="multiple of --limit-per-domain"):
        sample_cases(cases, 40, offset_per_domain=30)


def test_knowledge_base_results_show_what_the_item_says_without_its_bookkeeping(cases):
    from sopagent.eval.star.runner import event_line

    results = [e for c in cases for e in c.history if e.role == "backend" and e.item]
    assert results
    for event in results[:500]:
        shown = {k for k in event.item if k not in KB_BOOKKEEPING_FIELDS}
        line = event_line(event)
        assert all(f"{k} = " in line for k in shown)  # every field the customer could be told
        if shown:
            assert not any(line.startswith(f"[result] {k} = ") or f"; {k} = " in line for k in KB_BOOKKEEPING_FIELDS)
        assert set(KB_BOOKKEEPING_FIELDS) & set(event.item)  # the policy still has the whole item
        assert all(f"{k} = " in event.text for k in event.item)  # and the event as recorded
        assert all(f"{k} = " in event_line(event, hidden_fields=()) for k in event.item)
    assert format_item({"APIName": "weather", "id": 7}) == "APIName = weather ; id = 7"  # nothing else to show
    assert format_item({"APIName": "weather", "City": "Oslo"}, hidden=()) == "APIName = weather ; City = Oslo"


def test_the_closing_prior_raises_only_closing_kinds_that_do_not_answer_the_last_action(tasks):
    checked = 0
    for task in tasks.values():
        closing = set(closing_actions(task))
        for action in task.actions:
            history = (Event("agent", task.text(action), action=action), Event("customer", "thanks, bye"))
            plain = kind_weights(task, history)
            raised = kind_weights(task, history, StarSettings(closing_weight=4.0))
            expected = set(gate.expected_user_nodes(task, action))
            for node in task.user_nodes:
                if node in expected:
                    assert plain[node] == raised[node] == DEFAULT_SETTINGS.expected_weight
                elif task.sam_graph.get(node) in closing:
                    assert (plain[node], raised[node]) == (1.0, 4.0), (task.name, action, node)
                    checked += 1
                else:
                    assert plain[node] == raised[node] == 1.0
            # the scores follow the weights: a closing kind alone scores 4x its probability
            for node in task.user_nodes:
                if node not in expected and task.sam_graph.get(node) in closing:
                    scores = score_actions(task, history, {node: 0.5}, StarSettings(closing_weight=4.0))
                    assert scores == {task.sam_graph[node]: 2.0}
    assert checked > len(tasks)
