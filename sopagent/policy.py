"""The policy authoring API: SOPs as plain, testable Python.

A policy is a module with one :class:`Policy` object and its steps::

    policy = Policy(name="card_services", version="1.0", catalog="../catalogs/card_services.yaml",
                    start="welcome", fallback="handoff_to_human")

    class Intent(Facts):
        intent: Literal["lost_card", "dispute", "other"]

    @policy.step(facts=Intent)
    def welcome(turn: Turn[Intent, Bank]) -> list[Option]:
        if turn.facts.intent == "lost_card":
            return [say("ask_card_blocked_confirm", next="confirm_block")]
        return [say("ask_how_to_help", next="welcome")]

A step receives the facts the model extracted from the customer's latest message (validated by
the step's Pydantic model), the facts known so far, and the backend tools; it returns the
*allowed* options. The model only ever chooses among them.
"""

from __future__ import annotations

import ast
import datetime as dt
import hashlib
import importlib.util
import inspect
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Generic, Literal, Mapping, Sequence, TypeVar, get_args, get_origin

from pydantic import BaseModel, ConfigDict, model_validator

from sopagent.catalog import Catalog, load_catalog
from sopagent.consent import CONDITIONS, why_not_plain
from sopagent.effects import RESULT_MARK, Effect, EffectResult
from sopagent.errors import PolicyError, did_you_mean

END = "__end__"
"""Use as ``next=END`` for an option after which the conversation is over."""

F = TypeVar("F", bound=BaseModel)
T = TypeVar("T")
R = TypeVar("R", bound=BaseModel)

FACT_CONFIDENCE = 0.0
"""The default ``Policy(fact_confidence=...)``: the probability below which an optional fact is unsure."""

FOLLOW_UP_READINGS = "follow_up_readings"
"""Key of a decision's facts that holds the step's :meth:`Turn.read` readings."""


class Facts(BaseModel):
    """Base for the facts a step reads from the customer's words.

    Declare fields with Literal enums, pattern-constrained strings, numbers and optional
    fields; the field description is what the model is told to look for.
    """

    model_config = ConfigDict(extra="forbid")


class NoFacts(Facts):
    """A step that needs nothing from the customer's words."""


class OneOf(Facts):
    """Facts that are one label among described alternatives, read with ONE constrained token.

    Instead of generating JSON, the engine asks the model's choice API (one forward step over
    the letters A, B, C...) and fills ``probabilities`` with every label's probability, so a step
    can weigh the model's reading against what the procedure expects. Subclass it and set
    ``options`` (label -> description, in order, at most 26).

    With ``in_policy_text`` the lettered options and the question are told once, in the policy's
    description (put :meth:`system_instructions` in it), instead of after the conversation: every
    reading then shares its whole prompt with the previous one up to the conversation's new lines,
    which the model's prompt cache keeps. Worth it where many options are read on every turn.
    """

    label: str | None = None
    """The chosen label (None when there was nothing to read)."""
    probabilities: dict[str, float] = {}
    """Probability of every label, as the model gave it."""
    options: ClassVar[dict[str, str]] = {}
    question: ClassVar[str] = ("The customer's latest message is: \"{message}\"\n"
                               "Which of the kinds listed above is it?")
    """Asked after the conversation; ``{message}`` is replaced by the customer's latest message."""
    in_policy_text: ClassVar[bool] = False
    """The options and the question are in the policy's description (:meth:`system_instructions`),
    so nothing is asked after the conversation; the question then cannot name ``{message}``."""

    @model_validator(mode="after")
    def _known_label(self) -> "OneOf":
        if self.label is not None and self.label not in self.options:
            raise ValueError(f"label {self.label!r} is not one of {list(self.options)}")
        return self

    @classmethod
    def lettered_options(cls) -> str:
        """The options as lettered lines (``A) description``), for a policy description."""
        from sopagent.prompts import lettered

        return lettered(list(cls.options.values()))

    @classmethod
    def system_instructions(cls) -> str:
        """The lettered options and the question, for the policy description of an ``in_policy_text`` reading."""
        from sopagent.prompts import LETTER_ONLY

        return f"{cls.lettered_options()}\nFor each conversation you are shown, answer: {cls.question} {LETTER_ONLY}"


NOT_SAID = "not said"
"""The label a :class:`OneToken` field's reading takes when the message does not give the value."""


@dataclass(frozen=True)
class OneToken:
    """Marks an enum (``Literal``) field of a facts model as read by itself with one constrained token.

    Use it where a JSON reading guesses: the engine asks ``question`` about the customer's latest
    message with the field's values as lettered ``options`` (value -> description) after an explicit
    ``not_said`` option, and takes the value only when the model gives it at least ``at_least``;
    otherwise the field keeps its default (not given) and the step asks. Annotate the field::

        refund_to: Annotated[Literal["original payment method", "gift card"] | None, OneToken(
            question="Where does the latest message say the refund should go?",
            not_said="the message does not say where the refund should go",
            options={"original payment method": "back to the card or account the customer paid with",
                     "gift card": "onto a gift card"})] = None

    The reading runs with backends that measure probabilities (the embedded model); with others the
    JSON value stands. It costs one prompt evaluation of the question and one decoded token.
    """

    question: str
    not_said: str
    options: dict[str, str]
    at_least: float = 0.6
    labels: type[OneOf] = field(init=False, repr=False, compare=False)
    """The reading's labels: :data:`NOT_SAID` first, then the field's values."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", type("FieldReading", (OneOf,), {
            "options": {NOT_SAID: self.not_said, **self.options}, "__module__": __name__}))


def one_token_fields(schema: type[BaseModel]) -> dict[str, OneToken]:
    """The fields of ``schema`` marked :class:`OneToken`, by name; a marker whose options are not the
    field's values is a PolicyError."""
    found = {}
    for name, info in schema.model_fields.items():
        for marker in info.metadata:
            if isinstance(marker, OneToken):
                values = set(literal_values(info.annotation))
                if not set(marker.options) <= values or not marker.options:
                    raise PolicyError(f"{schema.__name__}.{name}: OneToken options {sorted(marker.options)} are not "
                                      f"values of the field ({sorted(map(str, values))})",
                                      fix="give OneToken(options=...) one description per Literal value of the field")
                found[name] = marker
    return found


def literal_values(annotation: Any) -> list[Any]:
    """The values of a ``Literal`` annotation, an optional one's included (empty for any other type)."""
    if get_origin(annotation) is Literal:
        return list(get_args(annotation))
    return [value for arg in get_args(annotation) for value in literal_values(arg)]


class Confirmation(OneOf):
    """The customer's answer to "shall I do it?": yes, no, not a clear answer, or a request for a person.

    Read with one constrained token and every label's probability. Subclass it to rename the
    hand-off the way a policy's other facts name it; test it with :meth:`Turn.confirmed`.
    """

    options = {
        "yes": "yes: clearly agrees and asks to go ahead now",
        "no": "no: refuses, says not to do it, or says the problem went away",
        "unclear": "not a clear answer: hesitates, asks a question, or says it depends",
        "human": "asks to speak to a human person",
    }
    question = ("The agent asked the customer to confirm. The customer's latest message is: \"{message}\"\n"
                "Which of these is it?")


class YesNo(OneOf):
    """A two-way yes/no reading (:meth:`Turn.check`)."""

    options = {"yes": "Yes", "no": "No"}


class ClearYes(OneOf):
    """The two-way reading behind an irreversible action (:meth:`Turn.confirmed`)."""

    options = {"yes": "Yes, a clear yes", "no": "No: a no, a question, a doubt or a condition"}
    question: ClassVar[str] = "Is the customer's latest message a clear yes to the agent's question?"


@dataclass(frozen=True)
class Option:
    """One reply the policy allows at this point, where the conversation goes after it, and the
    actions it would take on the customer's account."""

    response: str
    """Catalog response id."""
    next: str
    """Name of the step that handles the customer's next message (or :data:`END`)."""
    slots: Mapping[str, Any] = field(default_factory=dict)
    """Values for the response's slots, bound by policy code; a slot filled by an effect's result
    holds ``{"$result_of": index, "field": name}``."""
    hint: str | None = None
    """Extra words for the model on when to pick this option (shown after the catalog description)."""
    effects: tuple[Effect, ...] = ()
    """Backend actions taken if this option is chosen: run once, after the decision is recorded and
    any approval given (see :mod:`sopagent.effects`)."""
    origin: str | None = field(default=None, compare=False, repr=False)
    """Where the option was made (``file:line`` of its ``say()``), for error messages."""

    def pending_slots(self) -> dict[str, str]:
        """Slots filled by an effect's result: slot -> the effect's name."""
        return {name: self.effects[value[RESULT_MARK]].name for name, value in self.slots.items()
                if isinstance(value, Mapping) and RESULT_MARK in value}


def say(response: str, next: str, hint: str | None = None, do: Sequence[Effect] | Effect = (),
        **slots: Any) -> Option:
    """Shorthand for :class:`Option`: ``say("fee_refunded", next="anything_else", amount=fee)``.

    ``do`` lists the actions this option takes (``turn.tools.refund_fee.plan(...)``); a slot may be
    bound to one of their results (``delivery_date=block.result``).
    """
    effects = (do,) if isinstance(do, Effect) else tuple(do)
    for effect in effects:
        if not isinstance(effect, Effect):
            raise PolicyError(f"say({response!r}, do=...) got {effect!r}, not a planned action",
                              path=_caller_line(),
                              fix="plan backend actions with turn.tools.NAME.plan(...) and pass them in do=[...]")
    bound: dict[str, Any] = {}
    for name, value in slots.items():
        if isinstance(value, EffectResult):
            if value.effect not in effects:
                raise PolicyError(f"say({response!r}): slot {name!r} is bound to the result of "
                                  f"{value.effect.name}, which this option does not do", path=_caller_line(),
                                  fix="add that planned action to do=[...] of this say()")
            value = {RESULT_MARK: effects.index(value.effect), "field": value.field}
        bound[name] = value
    return Option(response=response, next=next, slots=bound, hint=hint, effects=effects, origin=_caller_line())


def _caller_line() -> str | None:
    frame = sys._getframe(2)
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


@dataclass
class Turn(Generic[F, T]):
    """What a step sees: the facts of this message, what is known so far, and the tools."""

    facts: F
    """Facts extracted from the customer's latest message (validated)."""
    known: dict[str, Any]
    """Facts gathered so far in this conversation (non-empty values of earlier turns merged in,
    this turn's included). Steps may add their own notes; everything here is stored."""
    tools: T
    """Backend look-ups given to the agent (never globals)."""
    step: str
    """Name of the step being run."""
    conversation_id: str
    reader: Callable[[str, type[BaseModel], bool, bool], BaseModel] | None = field(default=None, repr=False)
    """How :meth:`read` asks the model (set by the engine)."""
    readings: list[dict[str, Any]] = field(default_factory=list)
    """The follow-up readings this step made (question and answer), stored with the decision."""
    action_confidence: float = 0.0
    """The policy's bar for the reading behind an irreversible action (see :meth:`confirmed`)."""
    message: str = ""
    """The customer's latest message as written (empty when the agent acts without one)."""
    probabilities: dict[str, float] = field(default_factory=dict)
    """Each fact's probability as the model decoded it (empty where the backend cannot measure it)."""
    ungrounded: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Values the model read that the customer's message does not support, by field: ``{"value": ...,
    "why": "not in the message" | "ambiguous" | "unsure" | "invalid"}`` (an unsure value with its
    ``probability``). They are back at their default in :attr:`facts` (not given), so the step asks
    again; a step can use this to ask better (a date written both ways: ask for the
    month as a word)."""
    failures: Callable[[str, str], int] | None = field(default=None, repr=False)
    """How :meth:`recent_failures` counts (set by the engine)."""
    failed_checks: list[tuple[str, str]] = field(default_factory=list)
    """The ``(check, subject)`` failures this step noted (:meth:`record_failure`), stored with the decision."""
    confirmation: float | None = None
    """The probability of "a clear yes" that :meth:`confirmed` read, once it did; the engine checks it
    against ``action_confidence`` before it plans an irreversible action."""

    def confirmed(self, conditions: Sequence[str] = CONDITIONS) -> bool:
        """True only for a clear yes to the agent's question: the step's :class:`Confirmation` reads
        ``yes``, the message holds no condition, doubt, question or text dressed as a system instruction
        (:func:`sopagent.consent.why_not_plain`, with ``conditions`` as the words of doubt), and a
        second, two-way reading ("is it a clear yes?", :class:`ClearYes`) gives yes a probability of at
        least the policy's ``action_confidence``. Plan an irreversible action only when this is true,
        and otherwise ask again.

        The four-way reading ranks a confirmation well but spreads its probability thinly over the
        labels; the two-way question separates a clear yes from a hesitant, conditional or withdrawn
        one (see BENCHMARKS.md, "Confirmations"). It is asked right after the step's own reading,
        under the policy's system text, so a backend that keeps the prompt prefix cached evaluates
        only the question. Both readings are recorded with the decision.
        """
        facts = self.facts
        if not isinstance(facts, OneOf) or "yes" not in facts.options:
            raise PolicyError(f"step {self.step!r} called turn.confirmed() but its facts are "
                              f"{type(facts).__name__}, not a Confirmation", path=_caller_line(),
                              fix="declare the step with facts=Confirmation (or a subclass of it)")
        if facts.label != "yes":
            self.confirmation = 0.0
            return False
        not_plain = why_not_plain(self.message, conditions)
        if not_plain is not None:
            self.confirmation = 0.0
            self.readings.append({"check": "plain consent", "answer": f"not a clear yes: {not_plain}"})
            return False
        answer = self.read(ClearYes.question, ClearYes, under_policy_text=True)
        self.confirmation = answer.probabilities.get("yes", 0.0) if isinstance(answer, OneOf) else 0.0
        return self.confirmation >= self.action_confidence

    def recent_failures(self, check: str, subject: str) -> int:
        """How many times ``check`` failed for ``subject`` (say, the identity check for one card) within the
        policy's ``lockout_window``, in any conversation of this policy: lock a subject out across
        conversations, which per-conversation counters cannot (a new conversation starts at zero). Noted
        with :meth:`record_failure`; this turn's own failure is not counted yet."""
        return self.failures(check, str(subject)) if self.failures is not None else 0

    def record_failure(self, check: str, subject: str) -> None:
        """Note that ``check`` failed for ``subject`` in this turn; recorded with the decision (the subject
        only as a digest) and counted by :meth:`recent_failures` from the next turn on."""
        self.failed_checks.append((check, str(subject)))

    def check(self, question: str, at_least: float) -> bool:
        """True when the model answers yes to a yes/no ``question`` about the customer's latest message
        with probability at least ``at_least``: one two-way reading (:class:`YesNo`) of that message alone
        (the conversation before it is left out: an earlier complaint made "could you open a savings
        account?" read as one), under the policy's text, recorded with the decision. Use it before an
        action that a single JSON field would otherwise decide (card services logs a complaint only when
        it holds; BENCHMARKS.md, "Routing checks")."""
        answer = self.read(question, YesNo, under_policy_text=True, latest_only=True)
        return isinstance(answer, OneOf) and answer.probabilities.get("yes", 0.0) >= at_least

    def read(self, question: str, schema: type[R], under_policy_text: bool = False,
             latest_only: bool = False) -> R:
        """Ask the model one more question about the conversation, its answer constrained to ``schema``.

        The procedure decides what to ask and what the answer changes; the model only reads. The
        question goes after the conversation, under its own short system text
        (:data:`sopagent.prompts.READING_SYSTEM`), not the policy's; with ``under_policy_text``,
        under the policy's system text, right after the prompt of the step's own reading, so a
        backend that caches the prompt prefix evaluates only the question (the policy's text is
        long and holds examples of customer messages, which suits a question about the kind of
        message better than one that copies a value out of the conversation). A :class:`OneOf` schema is
        answered with one lettered label (its ``options`` listed after the question) and every
        label's probability. With ``latest_only`` the model sees the customer's latest message alone,
        not the conversation before it. Every reading is recorded with the decision
        (``follow_up_readings`` in its facts).
        """
        if self.reader is None:
            raise PolicyError(f"step {self.step!r} asked the model to read, but this turn has no model",
                              fix="call turn.read only in steps run by an Agent")
        facts = self.reader(question, schema, under_policy_text, latest_only)
        reading: dict[str, Any] = {"question": question, "schema": schema.__name__,
                                   "answer": facts.model_dump(mode="json")}
        if under_policy_text:
            reading["under_policy_text"] = True
        if latest_only:
            reading["latest_only"] = True
        self.readings.append(reading)
        return facts  # type: ignore[return-value]


StepFunction = Callable[[Turn[Any, Any]], list[Option]]


@dataclass(frozen=True)
class Step:
    """A named step of a policy."""

    name: str
    function: StepFunction
    facts: type[BaseModel]
    description: str


class Policy:
    """A standard operating procedure: steps, their response catalog and their settings."""

    def __init__(
        self,
        name: str,
        version: str,
        catalog: str | Path,
        start: str,
        fallback: str,
        holding: str | None = None,
        confidence_threshold: float = 0.0,
        description: str = "",
        tools: Callable[[], Any] | None = None,
        approve_when_confidence_unknown: bool = False,
        action_confidence: float = 0.65,
        fact_confidence: float = FACT_CONFIDENCE,
        lockout_window: dt.timedelta = dt.timedelta(hours=24),
        sensitive: Sequence[str] = (),
        read_language: bool = False,
    ) -> None:
        """
        Args:
            name: policy name, used on the command line and in the audit log.
            version: the author's version label (the audit log also stores a content hash).
            catalog: path of the response catalog, relative to the policy file.
            start: name of the first step.
            fallback: response sent when something fails (model down, policy bug): a hand-off.
            holding: response sent while a reply waits for operator approval.
            confidence_threshold: a model choice below this probability waits for an operator.
            description: what the policy handles, told to the model as context.
            tools: factory for the default backend tools (demo data); agents may pass their own.
            approve_when_confidence_unknown: a model choice whose probability the backend could
                not report (a hosted model without log-probabilities) waits for an operator.
            action_confidence: an irreversible action is planned only on a clear yes read with at
                least this probability (:meth:`Turn.confirmed` tests it; the engine refuses an option
                that plans one on a weaker reading). The default suits the embedded model's
                two-way reading, where a clear yes read 0.76-0.84 and anything else 0.36-0.56 on
                the confirmation set of BENCHMARKS.md, "Confirmations".
            fact_confidence: an optional fact the model decoded with less than this probability is
                unsure and treated as not given, so the step asks for it (recorded as "not taken").
            lockout_window: how far back :meth:`Turn.recent_failures` counts a check's failures.
            sensitive: regular expressions of further sensitive values (member numbers, national ids):
                masked in every customer message before it is stored or read, like card numbers and
                IBANs (:mod:`sopagent.redact`).
            read_language: for a catalog in several languages, read the conversation's language from
                the customer's first message (one constrained token over the catalog's languages) when
                the channel did not set one; otherwise replies go out in the catalog's first language.
        """
        for setting, value in (("action_confidence", action_confidence), ("fact_confidence", fact_confidence)):
            if not 0.0 <= value <= 1.0:
                raise PolicyError(f"{setting}={value!r} is not a probability",
                                  fix=f"pass a number between 0 and 1, e.g. {setting}=0.65")
        self.name = name
        self.version = version
        self.catalog_path = catalog
        self.start = start
        self.fallback = fallback
        self.holding = holding
        self.confidence_threshold = confidence_threshold
        self.approve_when_confidence_unknown = approve_when_confidence_unknown
        self.action_confidence = action_confidence
        self.fact_confidence = fact_confidence
        self.lockout_window = lockout_window
        self.sensitive = tuple(sensitive)
        self.read_language = read_language
        for pattern in self.sensitive:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise PolicyError(f"sensitive pattern {pattern!r} is not a regular expression: {exc}",
                                  fix="write a Python regular expression, e.g. r'AB-[0-9]{6}'") from None
        self.description = description
        self.tools_factory = tools
        self.steps: dict[str, Step] = {}
        self.guards: list[Callable[[Turn[Any, Any]], list[Option] | None]] = []
        self.source_path: Path | None = None
        self._catalog: Catalog | None = None

    def step(self, facts: type[BaseModel] = NoFacts, name: str | None = None) -> Callable[[StepFunction], StepFunction]:
        """Decorator registering a step; ``facts`` is the Pydantic model read from the customer's message."""
        if not (isinstance(facts, type) and issubclass(facts, BaseModel)):
            raise PolicyError(f"step facts must be a Pydantic model class, got {facts!r}",
                              fix="declare `class MyFacts(Facts): ...` and pass facts=MyFacts")

        if issubclass(facts, OneOf) and facts.in_policy_text:
            self._check_in_policy_text(facts)

        def register(function: StepFunction) -> StepFunction:
            step_name = name or function.__name__
            if step_name in self.steps:
                raise PolicyError(f"step {step_name!r} is defined twice", path=_where(function),
                                  fix="give each step a unique name")
            doc = inspect.getdoc(function) or ""
            self.steps[step_name] = Step(step_name, function, facts, doc)
            return function

        return register

    def _check_in_policy_text(self, facts: type[OneOf]) -> None:
        """Refuse an ``in_policy_text`` reading whose options and question the description does not tell."""
        if "{message}" in facts.question:
            raise PolicyError(f"{facts.__name__}.question names {{message}}, but in_policy_text puts the "
                              "question in the system text, which is the same for every message",
                              fix="drop {message} from the question (the message is the conversation's last line) "
                                  "or set in_policy_text = False")
        if facts.system_instructions() not in self.description:
            raise PolicyError(f"{facts.__name__} is read with in_policy_text, but the description of policy "
                              f"{self.name!r} does not tell its options and question",
                              fix=f"end the description with {facts.__name__}.system_instructions(), "
                                  "or set in_policy_text = False")

    def guard(self, function: Callable[[Turn[Any, Any]], list[Option] | None]
              ) -> Callable[[Turn[Any, Any]], list[Option] | None]:
        """Decorator for a check run before every step; returning options short-circuits the step.

        Use it for what applies at any step, such as a customer asking for a human.
        """
        self.guards.append(function)
        return function

    @property
    def catalog(self) -> Catalog:
        """The validated response catalog (loaded on first use)."""
        if self._catalog is None:
            base = self.source_path.parent if self.source_path else Path.cwd()
            self._catalog = load_catalog(base / self.catalog_path)
        return self._catalog

    @property
    def source_sha256(self) -> str:
        """Hash of the policy's source file (or of its name and version when built in memory)."""
        return hashlib.sha256(self.source_text.encode("utf-8")).hexdigest()

    @property
    def source_text(self) -> str:
        """The policy's source code, stored with each policy version in the audit log."""
        if self.source_path is not None:
            return self.source_path.read_text(encoding="utf-8")
        return f"# in-memory policy {self.name} {self.version}\n"

    def helper_modules(self) -> dict[str, Path]:
        """Modules beside the policy file that it imports (directly or through each other), by name.

        These hold code the policy runs (backend look-ups, shared rules), so they are stored with
        every policy version; data files they read (``demo_data/``) are not.
        """
        if self.source_path is None:
            return {}
        folder = self.source_path.parent
        found: dict[str, Path] = {}
        todo = [self.source_path]
        while todo:
            path = todo.pop()
            try:
                tree = ast.parse(path.read_text(encoding="utf-8"))
            except (OSError, SyntaxError):
                continue
            for node in ast.walk(tree):
                names: list[str] = []
                if isinstance(node, ast.Import):
                    names = [alias.name.split(".")[0] for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module.split(".")[0]]
                for name in names:
                    candidate = folder / f"{name}.py"
                    if name not in found and candidate.exists() and candidate != self.source_path:
                        found[name] = candidate
                        todo.append(candidate)
        return dict(sorted(found.items()))

    @property
    def modules_json(self) -> str:
        """The helper modules' snapshot as stored with a policy version (see :meth:`helper_modules`)."""
        modules = {name: {"path": path.name, "source": path.read_text(encoding="utf-8")}
                   for name, path in self.helper_modules().items()}
        if not modules:
            return "{}"
        origin = str(self.source_path.parent) if self.source_path else ""
        return json.dumps({"origin": origin, "policy_file": self.source_path.name if self.source_path else "",
                           "modules": modules}, sort_keys=True)

    def make_tools(self) -> Any:
        """Build the policy's default tools (its demo backend), or None when it has none."""
        return self.tools_factory() if self.tools_factory else None

    def validate_options(self, step: str, options: list[Option]) -> None:
        """Raise :class:`PolicyError` when a step returned something its catalog or graph does not allow."""
        def where() -> str | None:  # found only for an error: inspect reads the source file
            return _where(self.steps[step].function) if step in self.steps else None

        if not isinstance(options, list) or not options:
            raise PolicyError(f"step {step!r} returned no option ({options!r})", path=where(),
                              fix="every path through a step must return at least one Option")
        for option in options:
            if not isinstance(option, Option):
                raise PolicyError(f"step {step!r} returned {option!r}, not an Option", path=where(),
                                  fix="return a list of say(...) or Option(...)")
            if option.response not in self.catalog:
                raise PolicyError(f"step {step!r} returned unknown response {option.response!r}"
                                  f"{did_you_mean(option.response, list(self.catalog.responses))}",
                                  path=option.origin or where(), fix=f"add it to {self.catalog.path} or correct the id")
            if option.next != END and option.next not in self.steps:
                raise PolicyError(f"step {step!r} leads to unknown step {option.next!r}"
                                  f"{did_you_mean(str(option.next), list(self.steps))}",
                                  path=option.origin or where(),
                                  fix=f"define @policy.step {option.next} or use next=END")
            for effect in option.effects:
                if not isinstance(effect, Effect):
                    raise PolicyError(f"step {step!r}: option {option.response!r} plans {effect!r}, not an action",
                                      path=option.origin or where(), fix="plan actions with turn.tools.NAME.plan(...)")
            try:
                self.catalog[option.response].preview(option.slots, option.pending_slots())
            except ValueError as exc:
                raise PolicyError(f"step {step!r}: {exc}", path=option.origin or where(),
                                  fix="bind every declared slot with a value of its type") from None


def _where(function: Callable[..., Any]) -> str | None:
    try:
        return f"{inspect.getsourcefile(function)}:{inspect.getsourcelines(function)[1]}"
    except (OSError, TypeError):
        return None


def load_policy(path: str | Path) -> Policy:
    """Import a policy file and return its :class:`Policy` (the module's ``policy`` variable)."""
    path = Path(path).resolve()
    if not path.exists():
        raise PolicyError("policy file not found", path=str(path),
                          fix="pass the path of a policy module, e.g. policies/card_services.py")
    module_name = f"sopagent_policy_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PolicyError("not a Python module", path=str(path), fix="policy files end in .py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    sys.path.insert(0, str(path.parent))  # so a policy can import its own backend module beside it
    try:
        spec.loader.exec_module(module)
    except PolicyError:
        raise
    except Exception as exc:  # the author's module failed to import: show where
        tb = exc.__traceback__
        line = None
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == str(path):
                line = tb.tb_lineno
            tb = tb.tb_next
        raise PolicyError(f"importing the policy failed: {type(exc).__name__}: {exc}", path=str(path),
                          line=line, fix="fix the error at that line") from exc
    finally:
        sys.path.remove(str(path.parent))
    policies = [value for value in vars(module).values() if isinstance(value, Policy)]
    policy = getattr(module, "policy", None)
    if not isinstance(policy, Policy):
        if len(policies) != 1:
            raise PolicyError("no `policy = Policy(...)` found in the module", path=str(path),
                              fix="define exactly one module-level `policy = Policy(...)`")
        policy = policies[0]
    policy.source_path = path
    if policy.start not in policy.steps:
        raise PolicyError(f"start step {policy.start!r} is not defined", path=str(path),
                          fix="decorate a function with @policy.step and name it in start=")
    for attr in ("fallback", "holding"):
        response_id = getattr(policy, attr)
        if response_id is not None and response_id not in policy.catalog:
            raise PolicyError(f"{attr} response {response_id!r} is not in the catalog", path=str(path),
                              fix=f"add it to {policy.catalog.path}")
    return policy
