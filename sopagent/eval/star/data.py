"""Loading STAR: task schemas (STAR's own and SAM's), dialogues, and next-action test cases.

The protocol is SAM's (see the data folder's README): happy, single-task dialogues; one case per
Wizard ``pick_suggestion`` or ``query`` event; the input is every User utterance, Wizard reply or
query and KnowledgeBase result before it.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from sopagent.errors import EvalDataError

QUERY_LABELS = ("query", "query_check", "query_book")
"""Knowledge-base calls: actions of the agent that are not customer-facing text."""


@dataclass(frozen=True)
class TaskSchema:
    """One STAR task: its replies (the catalog) and its flowcharts."""

    name: str
    replies: dict[str, str]
    """STAR's own action label -> reply text."""
    graph: dict[str, str]
    """STAR's happy-path graph: system action -> next system action."""
    sam_replies: dict[str, str] = field(default_factory=dict)
    """SAM's nodes: system actions plus ``user_*`` and ``db_*`` nodes with example texts."""
    sam_graph: dict[str, str] = field(default_factory=dict)
    """SAM: user or db node -> the system action that follows it."""
    sam_r_graph: dict[str, str] = field(default_factory=dict)
    """SAM: user or db node -> the system action it answers."""

    @property
    def domain(self) -> str:
        """The domain, the task name's prefix (``bank`` for ``bank_balance``)."""
        return self.name.split("_")[0]

    @property
    def actions(self) -> list[str]:
        """Every system action label: STAR's replies plus SAM's system nodes, in file order."""
        seen = dict.fromkeys(self.replies)
        for node in self.sam_replies:
            if not node.startswith(("user_", "db_")):
                seen.setdefault(node)
        return list(seen)

    @property
    def user_nodes(self) -> list[str]:
        """SAM's ``user_*`` nodes (kinds of customer message), in file order."""
        return [n for n in self.sam_replies if n.startswith("user_")]

    @property
    def db_nodes(self) -> list[str]:
        """SAM's ``db_*`` nodes (kinds of knowledge-base result), in file order."""
        return [n for n in self.sam_replies if n.startswith("db_")]

    def text(self, action: str) -> str:
        """Reply text of an action (STAR's wording first, SAM's otherwise)."""
        return self.replies.get(action) or self.sam_replies.get(action) or action


@dataclass(frozen=True)
class Event:
    """One event of the dialogue so far, as the agent sees it."""

    role: str
    """``customer``, ``agent`` (a reply or a query) or ``backend`` (a knowledge-base result)."""
    text: str
    """The event as recorded: a query with its parameters, a result with every field of its item
    (what the model is shown of it is :func:`sopagent.eval.star.runner.transcript`'s choice)."""
    action: str | None = None
    """The agent's action label, where the wizard picked one (None for free-typed replies)."""
    item: dict[str, Any] | None = None
    """The knowledge-base result item."""


@dataclass(frozen=True)
class Case:
    """One next-action test case."""

    case_id: str
    dialogue_id: int
    index: int
    """Position of the case within its dialogue (0, 1, ...)."""
    task: str
    history: tuple[Event, ...]
    gold: str

    @property
    def domain(self) -> str:
        """Domain name (task prefix)."""
        return self.task.split("_")[0]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EvalDataError(f"missing file {path}",
                            fix="pass the STAR folder as DATA_DIR (it holds tasks/, tasks_sam/, "
                                "dialogues.jsonl.gz and happy_dialogue_ids.json)") from None
    except (OSError, ValueError) as exc:
        raise EvalDataError(f"cannot read {path}: {exc}", fix="restore the file from the STAR release") from None


def load_task(star_file: Path, sam_file: Path | None = None) -> TaskSchema:
    """A task from STAR's schema file and, where present, SAM's richer schema of the same task."""
    star = _read_json(star_file)
    if not isinstance(star, dict) or "replies" not in star:
        raise EvalDataError(f"{star_file} is not a STAR task schema (no 'replies')",
                            fix="pass a file from STAR's tasks/ folder")
    sam = _read_json(sam_file) if sam_file is not None and sam_file.exists() else {}
    return TaskSchema(
        name=star_file.stem, replies=dict(star["replies"]), graph=dict(star.get("graph", {})),
        sam_replies=dict(sam.get("replies", {})), sam_graph=dict(sam.get("graph", {})),
        sam_r_graph=dict(sam.get("r_graph", {})))


def load_tasks(data_dir: Path, tasks_dir: Path | None = None) -> dict[str, TaskSchema]:
    """Every task of ``tasks_dir`` (default ``DATA_DIR/tasks``) with its SAM schema from ``tasks_sam/``."""
    folder = tasks_dir or data_dir / "tasks"
    files = sorted(folder.glob("*.json")) if folder.is_dir() else []
    if not files:
        raise EvalDataError(f"no task schemas in {folder}",
                            fix="pass DATA_DIR laid out like data/star, or --tasks FOLDER")
    tasks = {}
    for path in files:
        task = load_task(path, data_dir / "tasks_sam" / path.name)
        tasks[task.name] = task
    return tasks


def query_label(event: dict[str, Any]) -> str:
    """The gold label of a Wizard query: query_check / query_book by the constraints' RequestType."""
    kinds = {str(value) for constraint in event.get("Constraints") or [] for key, value in constraint.items()
             if key == "RequestType"}
    if any("Check" in k for k in kinds):
        return "query_check"
    if any("Book" in k for k in kinds):
        return "query_book"
    return "query"


KB_BOOKKEEPING_FIELDS = ("APIName", "id")
"""Fields of every STAR knowledge-base item that name the API and the database row, not anything the
customer or the agent can use: left out of the item's text in the conversation (about 13,000 of the
204,000 tokens of all 812 dialogues) and kept in :attr:`Event.item` for the policy."""


def format_item(item: dict[str, Any], hidden: tuple[str, ...] = KB_BOOKKEEPING_FIELDS) -> str:
    """A knowledge-base item as ``key = value`` pairs but the ``hidden`` ones (all pairs if nothing
    else is left)."""
    shown = {k: v for k, v in item.items() if k not in hidden} or item
    return " ; ".join(f"{k} = {v}" for k, v in shown.items())


def iter_dialogues(data_dir: Path) -> Iterator[dict[str, Any]]:
    """The raw dialogues of ``dialogues.jsonl.gz``."""
    path = data_dir / "dialogues.jsonl.gz"
    if not path.exists():
        raise EvalDataError(f"missing file {path}", fix="pass the STAR folder as DATA_DIR")
    with gzip.open(path, "rt", encoding="utf-8") as stream:
        for number, line in enumerate(stream, start=1):
            if line.strip():
                try:
                    yield json.loads(line)
                except ValueError:
                    raise EvalDataError(f"{path}: line {number} is not JSON",
                                        fix="restore the file from the STAR release") from None


def dialogue_cases(dialogue: dict[str, Any], task: str) -> list[Case]:
    """The test cases of one dialogue, each with the events before it."""
    history: list[Event] = []
    cases: list[Case] = []
    dialogue_id = int(dialogue["DialogueID"])
    for event in dialogue.get("Events", []):
        agent, action = event.get("Agent"), event.get("Action")
        if agent == "Wizard" and action in ("pick_suggestion", "query"):
            gold = event.get("ActionLabel") if action == "pick_suggestion" else query_label(event)
            if gold:
                cases.append(Case(f"{dialogue_id}-{len(cases)}", dialogue_id, len(cases), task, tuple(history), gold))
        if agent == "User" and action == "utter":
            history.append(Event("customer", str(event.get("Text", ""))))
        elif agent == "Wizard" and action == "pick_suggestion":
            history.append(Event("agent", str(event.get("Text", "")), action=event.get("ActionLabel")))
        elif agent == "Wizard" and action == "utter":
            history.append(Event("agent", str(event.get("Text", ""))))
        elif agent == "Wizard" and action == "query":
            label = query_label(event)
            constraints = "; ".join(f"{k} {v}" for c in event.get("Constraints") or [] for k, v in c.items())
            history.append(Event("agent", f"[{label}] {constraints}".strip(), action=label))
        elif agent == "KnowledgeBase" and action == "return_item":
            item = dict(event.get("Item") or {}) if event.get("TotalItems") != 0 else {}
            text = format_item(item, hidden=()) if item else "no result"
            history.append(Event("backend", f"[result] {text}", item=item))
    return cases


def load_cases(data_dir: Path, tasks: dict[str, TaskSchema]) -> list[Case]:
    """All cases of happy, single-task dialogues whose task is in ``tasks``, in dialogue order."""
    happy = set(_read_json(data_dir / "happy_dialogue_ids.json"))
    cases: list[Case] = []
    for dialogue in iter_dialogues(data_dir):
        if dialogue.get("DialogueID") not in happy:
            continue
        capabilities = (dialogue.get("Scenario") or {}).get("WizardCapabilities") or []
        if len(capabilities) != 1:
            continue
        task = capabilities[0].get("Task")
        if task in tasks:
            cases.extend(dialogue_cases(dialogue, task))
    return cases


def sample_cases(cases: list[Case], limit_per_domain: int | None, offset_per_domain: int = 0) -> list[Case]:
    """A deterministic sample: whole dialogues (ordered by a hash of their id) until each domain has
    ``limit_per_domain`` cases; the last dialogue is cut so the count is exact. Kept in dialogue order.

    The dialogues of each domain are dealt into consecutive samples of ``limit_per_domain`` cases,
    each starting with the dialogue after the one that ended the sample before it, so samples share
    no dialogue. ``offset_per_domain`` (a multiple of the limit) picks which one: ``limit 40,
    offset 40`` is the second, ``offset 80`` the third (held-out sets for settings chosen on the first).
    """
    if not limit_per_domain:
        return list(cases)
    if offset_per_domain % limit_per_domain:
        raise EvalDataError(f"a sample offset of {offset_per_domain} is not a whole number of "
                            f"{limit_per_domain}-case samples",
                            fix=f"pass --sample-offset as a multiple of --limit-per-domain "
                                f"(0, {limit_per_domain}, {2 * limit_per_domain}, ...)")
    import hashlib

    wanted = offset_per_domain // limit_per_domain
    by_dialogue: dict[int, list[Case]] = {}
    for case in cases:
        by_dialogue.setdefault(case.dialogue_id, []).append(case)
    order = sorted(by_dialogue, key=lambda d: hashlib.sha256(str(d).encode()).hexdigest())
    sample_of: dict[str, int] = {}  # per domain: the sample being filled
    filled: dict[str, int] = {}  # per domain: its cases so far
    chosen: set[str] = set()
    for dialogue_id in order:
        group = by_dialogue[dialogue_id]
        domain = group[0].domain
        index = sample_of.get(domain, 0)
        if index > wanted:
            continue
        taken = min(limit_per_domain - filled.get(domain, 0), len(group))
        if index == wanted:
            chosen.update(case.case_id for case in group[:taken])
        filled[domain] = filled.get(domain, 0) + taken
        if filled[domain] >= limit_per_domain:
            sample_of[domain], filled[domain] = index + 1, 0
    return [c for c in cases if c.case_id in chosen]
