"""``sopagent check``: static validation of a policy and its catalog, without a model.

Reads the policy's source (Python's ``ast``) to find every ``say(...)``/``Option(...)`` a step can
return, directly or through helper functions of the module, and checks:

* every response id exists in the catalog, and its slots are bound by name (and, where the value
  is a literal, with the right type);
* every ``next=`` names a step (or END), and every step is reachable from the start step;
* no step can return no option (a step with no option at all, ``return []``/``None``, or a path
  that falls off the end of the function);
* the catalog has a hand-off response; the fallback and holding responses need no slot values;
* no code in the policy module calls a backend action (``@action``) directly: actions are planned
  on options (``turn.tools.NAME.plan(...)``) and run by the engine after the record.
"""

from __future__ import annotations

import ast
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from sopagent.effects import actions_of
from sopagent.errors import AuthoringError, did_you_mean
from sopagent.policy import END, Policy, load_policy

OPTION_CALLS = {"say", "Option"}


@dataclass
class OptionSite:
    """A ``say(...)`` or ``Option(...)`` call found in the source."""

    line: int
    response: str | None
    next_step: str | None
    slot_names: set[str]
    literal_slots: dict[str, object]
    has_star_kwargs: bool


@dataclass
class FunctionFacts:
    """What the source says about one module-level function."""

    name: str
    line: int
    options: list[OptionSite] = field(default_factory=list)
    calls: set[str] = field(default_factory=set)
    empty_returns: list[int] = field(default_factory=list)
    falls_through: bool = False


def check_policy_file(path: str | Path) -> list[str]:
    """All problems found in a policy file, as ``file:line: message`` strings (empty when clean)."""
    try:
        policy = load_policy(path)
    except AuthoringError as exc:
        return [str(exc)]
    return check_policy(policy)


def check_policy(policy: Policy) -> list[str]:
    """All problems of a loaded policy."""
    assert policy.source_path is not None
    source_path = str(policy.source_path)
    problems: list[str] = []
    catalog = policy.catalog
    functions = _scan(policy.source_path.read_text(encoding="utf-8"))

    if not catalog.handoff_responses():
        problems.append(f"{catalog.path}: the catalog has no hand-off response; add one with `handoff: true` "
                        "so a customer can always reach a human")
    for attr in ("fallback", "holding"):
        response_id = getattr(policy, attr)
        if response_id and catalog[response_id].slots:
            problems.append(f"{source_path}: the {attr} response {response_id!r} has slots; it must be sendable "
                            "without any bound value")

    guard_options = [site for guard in policy.guards for site in _reachable_sites(guard.__name__, functions)]
    edges: dict[str, set[str]] = {}
    for name, step in policy.steps.items():
        fn_name = step.function.__name__
        facts = functions.get(fn_name)
        where = f"{source_path}:{facts.line if facts else '?'}"
        sites = _reachable_sites(fn_name, functions)
        if not sites:
            problems.append(f"{where}: step {name!r} never returns an option; return at least one say(...)")
        if facts is not None:
            for line in facts.empty_returns:
                problems.append(f"{source_path}:{line}: step {name!r} can return no option here")
            if facts.falls_through:
                problems.append(f"{where}: step {name!r} can reach the end of the function without returning "
                                "options; end every path with `return [...]`")
        edges[name] = set()
        for site in sites + guard_options:
            problems.extend(_check_site(policy, name, site, source_path))
            if site.next_step is not None:
                edges[name].add(site.next_step)

    problems.extend(direct_action_calls(policy, policy.source_path.read_text(encoding="utf-8"), source_path))

    reachable = {policy.start}
    queue = deque([policy.start])
    while queue:
        for nxt in edges.get(queue.popleft(), ()):
            if nxt in policy.steps and nxt not in reachable:
                reachable.add(nxt)
                queue.append(nxt)
    for name in policy.steps:
        if name not in reachable:
            function = functions.get(policy.steps[name].function.__name__)
            step_line: int | str = function.line if function is not None else "?"
            problems.append(f"{source_path}:{step_line}: step {name!r} is unreachable from the start step "
                            f"{policy.start!r}; lead to it with next={name!r} or remove it")
    return sorted(set(problems), key=problems.index)


def _check_site(policy: Policy, step: str, site: OptionSite, source_path: str) -> list[str]:
    where = f"{source_path}:{site.line}"
    problems = []
    catalog = policy.catalog
    if site.response is None:
        return [f"{where}: step {step!r} builds an option whose response id is not a literal string; "
                "write the id literally so it can be checked"]
    if site.response not in catalog:
        return [f"{where}: step {step!r} can return unknown response {site.response!r}"
                f"{did_you_mean(site.response, list(catalog.responses))}; add it to {catalog.path}"]
    if site.next_step is not None and site.next_step != END and site.next_step not in policy.steps:
        problems.append(f"{where}: option {site.response!r} leads to unknown step {site.next_step!r}"
                        f"{did_you_mean(site.next_step, list(policy.steps))}")
    declared = set(catalog[site.response].slots)
    if not site.has_star_kwargs:
        missing, extra = declared - site.slot_names, site.slot_names - declared
        if missing:
            problems.append(f"{where}: option {site.response!r} does not bind slot(s) {sorted(missing)}")
        if extra:
            problems.append(f"{where}: option {site.response!r} binds undeclared slot(s) {sorted(extra)}")
    for slot_name, value in site.literal_slots.items():
        slot = catalog[site.response].slots.get(slot_name)
        if slot is not None:
            try:
                slot.coerce(value)
            except ValueError as exc:
                problems.append(f"{where}: option {site.response!r}, slot {slot_name!r}: {exc}")
    return problems


def direct_action_calls(policy: Policy, source: str, source_path: str) -> list[str]:
    """Calls like ``turn.tools.block_card(...)`` of a backend action, which a step must plan instead."""
    try:
        actions = actions_of(policy.make_tools())
    except Exception as exc:  # the demo backend could not be built: say so rather than skip silently
        return [f"{source_path}: could not build the policy's tools to find its actions: {type(exc).__name__}: {exc}"]
    problems = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in actions:
            name = node.func.attr
            problems.append(f"{source_path}:{node.lineno}: calls the action {name} directly, so it would run "
                            f"before the decision is recorded or approved; plan it on the option instead: "
                            f"effect = turn.tools.{name}.plan(...); say(..., do=[effect])")
    return problems


def _reachable_sites(function: str, functions: dict[str, FunctionFacts]) -> list[OptionSite]:
    seen: set[str] = set()
    todo = [function]
    sites: list[OptionSite] = []
    while todo:
        name = todo.pop()
        if name in seen or name not in functions:
            continue
        seen.add(name)
        sites.extend(functions[name].options)
        todo.extend(functions[name].calls)
    return sites


def _scan(source: str) -> dict[str, FunctionFacts]:
    tree = ast.parse(source)
    functions: dict[str, FunctionFacts] = {}
    tables = _string_tables(tree)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            facts = FunctionFacts(node.name, node.lineno)
            for inner in ast.walk(node):
                if isinstance(inner, ast.Call) and isinstance(inner.func, ast.Name):
                    if inner.func.id in OPTION_CALLS:
                        facts.options.extend(_option_sites(inner, tables))
                    else:
                        facts.calls.add(inner.func.id)
                if isinstance(inner, ast.Return) and _is_empty(inner.value):
                    facts.empty_returns.append(inner.lineno)
            facts.falls_through = not _always_returns(node.body)
            functions[node.name] = facts
    return functions


def _string_tables(tree: ast.Module) -> dict[str, list[str]]:
    """Module-level ``NAME = {key: "string", ...}`` tables, so ``say(TABLE[key], ...)`` can be checked."""
    tables: dict[str, list[str]] = {}
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else (
            node.target if isinstance(node, ast.AnnAssign) else None)
        value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
        if isinstance(target, ast.Name) and isinstance(value, ast.Dict) and value.values and all(
                isinstance(v, ast.Constant) and isinstance(v.value, str) for v in value.values):
            tables[target.id] = [str(v.value) for v in value.values if isinstance(v, ast.Constant)]
    return tables


def _option_sites(call: ast.Call, tables: dict[str, list[str]]) -> list[OptionSite]:
    """One site per (response id, next step) the call can produce: literals, or each value of a
    module-level string table used as ``TABLE[key]``."""
    site = _option_site(call)
    keywords = {k.arg: k.value for k in call.keywords if k.arg}
    response_node = call.args[0] if call.args else keywords.get("response")
    next_node = call.args[1] if len(call.args) > 1 else keywords.get("next")
    table_responses, table_nexts = _table_values(response_node, tables), _table_values(next_node, tables)
    responses: list[str | None] = list(table_responses) if table_responses else [site.response]
    nexts: list[str | None] = list(table_nexts) if table_nexts else [site.next_step]
    return [OptionSite(site.line, response, step, site.slot_names, site.literal_slots, site.has_star_kwargs)
            for response in responses for step in nexts]


def _table_values(node: ast.expr | None, tables: dict[str, list[str]]) -> list[str]:
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
        return tables.get(node.value.id, [])
    return []


def _option_site(call: ast.Call) -> OptionSite:
    args = list(call.args)
    keywords = {k.arg: k.value for k in call.keywords if k.arg is not None}
    response_node = args[0] if args else keywords.pop("response", None)
    keywords.pop("response", None)
    next_node = args[1] if len(args) > 1 else keywords.pop("next", None)
    keywords.pop("next", None)
    keywords.pop("hint", None)
    keywords.pop("do", None)
    slot_nodes = dict(keywords)
    if isinstance(call.func, ast.Name) and call.func.id == "Option":
        slots_node = keywords.get("slots")
        slot_nodes = {}
        if isinstance(slots_node, ast.Dict):
            slot_nodes = {k.value: v for k, v in zip(slots_node.keys, slots_node.values)
                          if isinstance(k, ast.Constant) and isinstance(k.value, str)}
    return OptionSite(
        line=call.lineno,
        response=(response_node.value if isinstance(response_node, ast.Constant)
                  and isinstance(response_node.value, str) else None),
        next_step=_step_name(next_node),
        slot_names=set(slot_nodes),
        literal_slots={k: v.value for k, v in slot_nodes.items() if isinstance(v, ast.Constant)},
        has_star_kwargs=any(k.arg is None for k in call.keywords),
    )


def _step_name(node: ast.expr | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name) and node.id == "END":
        return END
    return None


def _is_empty(node: ast.expr | None) -> bool:
    return (node is None or (isinstance(node, ast.Constant) and node.value is None)
            or (isinstance(node, ast.List) and not node.elts))


def _always_returns(body: list[ast.stmt]) -> bool:
    for statement in body:
        if isinstance(statement, (ast.Return, ast.Raise)):
            return True
        if isinstance(statement, ast.If) and _always_returns(statement.body) and _always_returns(statement.orelse):
            return True
        if isinstance(statement, (ast.With, ast.AsyncWith)) and _always_returns(statement.body):
            return True
        if isinstance(statement, ast.Try) and _always_returns(statement.body) and all(
                _always_returns(h.body) for h in statement.handlers):
            return True
        if isinstance(statement, ast.Match) and statement.cases and all(
                _always_returns(c.body) for c in statement.cases) and any(
                isinstance(c.pattern, ast.MatchAs) and c.pattern.pattern is None for c in statement.cases):
            return True
    return False
