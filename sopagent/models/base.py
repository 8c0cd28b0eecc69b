"""The one small interface every model backend implements.

A backend does exactly two things, both with a constrained output space:

* :meth:`DecisionModel.extract` -- read the customer's message into a Pydantic facts model
  (JSON constrained to the model's schema while decoding, validated again after);
* :meth:`DecisionModel.choose` -- pick one of N labelled options, returning a probability for
  every option (constrained to the N labels while decoding, checked again after).
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)

PROBABILITIES_KEY = "_probabilities"
"""Where a test model's scripted facts give each field's probability (field -> probability)."""

OPTION_LABELS = string.ascii_uppercase
"""Options are labelled A, B, C...: one token each, so a choice costs one decoded token."""


def facts_json_schema(schema: type[BaseModel]) -> dict[str, Any]:
    """The facts model's JSON schema with every property required (nulls are written explicitly)."""
    document = schema.model_json_schema()
    document["required"] = list(document.get("properties", {}))
    return document


def validate_facts(schema: type[M], raw: str) -> tuple[M, dict[str, Any]]:
    """``raw`` (a JSON answer) validated against ``schema``, and the optional fields whose value was not
    valid for them (30 February, a code of the wrong length), left at their default so the procedure
    asks for them. Raises pydantic's ValidationError when a required field or the whole answer is
    invalid."""
    try:
        return schema.model_validate_json(raw), {}
    except ValidationError as exc:
        error = exc
    try:
        data = json.loads(raw)
    except ValueError:
        raise error from None
    if not isinstance(data, dict):
        raise error
    invalid: dict[str, Any] = {}
    for problem in error.errors():
        name = problem["loc"][0] if problem["loc"] else None
        if not isinstance(name, str):
            raise error
        info = schema.model_fields.get(name)
        if info is None or info.is_required() or name not in data:
            raise error
        invalid[name] = data.pop(name)
    return schema.model_validate(data), invalid


def check_option_count(n_options: int) -> None:
    """Raise ModelError unless ``n_options`` can be labelled (1 to 26)."""
    if not 1 <= n_options <= len(OPTION_LABELS):
        from sopagent.errors import ModelError

        raise ModelError(f"cannot choose among {n_options} options (1 to {len(OPTION_LABELS)})")


@dataclass(frozen=True)
class ChatPrompt:
    """A prompt as messages; backends render it with their own chat template.

    ``system`` and ``context`` come first and change least, so a backend that caches the prompt
    prefix (llama.cpp) re-evaluates only the ``task`` at the end. An empty ``task`` (the task is
    told in the system text) ends the prompt with the conversation.
    """

    system: str
    context: str
    task: str

    def messages(self) -> list[dict[str, str]]:
        """OpenAI-style chat messages."""
        return [
            {"role": "system", "content": self.system},
            {"role": "user", "content": f"{self.context}\n\n{self.task}" if self.task else self.context},
        ]


SELF_TEST_PROMPT = ChatPrompt("You are a helpful assistant.", "Question: what colour is the sky on a clear day?",
                              "Answer in one word.")
"""What every backend's start-up self-test asks: its natural answer is a word, never the test pattern."""


@dataclass
class CallStats:
    """What one model call cost."""

    ms: float = 0.0
    prompt_tokens: int = 0
    reused_tokens: int = 0
    generated_tokens: int = 0
    forced_tokens: int = 0
    """Decoded tokens the constraint left no choice about (one allowed token), where the backend knows."""
    jumped_tokens: int = 0
    """Tokens the answer's structure fixed (a JSON key after a value), appended in one batch with the
    token before them instead of decoded one by one; not counted in ``generated_tokens``."""
    constraint_ms: float = 0.0
    """Time spent building (or fetching from cache) the output constraint."""
    queued_ms: float = 0.0
    """Time the call waited for a shared model before it ran (set by the server's model queue)."""


@dataclass
class Extraction:
    """Facts read from the customer's message."""

    facts: BaseModel
    raw: str
    stats: CallStats = field(default_factory=CallStats)
    probabilities: dict[str, float] = field(default_factory=dict)
    """Each field value's probability as the model decoded it (its choice between null and a value
    included); empty where the backend cannot measure it."""
    invalid: dict[str, Any] = field(default_factory=dict)
    """Optional fields whose decoded value was not valid for them (left at their default), by field."""


@dataclass
class Choice:
    """The option the model picked and the probability it gave each option."""

    index: int
    probabilities: list[float]
    raw: str
    stats: CallStats = field(default_factory=CallStats)


@runtime_checkable
class DecisionModel(Protocol):
    """A constrained model backend."""

    name: str
    """Identity recorded in the audit log (backend, file, hash)."""

    def extract(self, prompt: ChatPrompt, schema: type[M]) -> Extraction:
        """Return facts matching ``schema``; raise ModelError when the answer is unusable."""
        ...

    def choose(self, prompt: ChatPrompt, n_options: int) -> Choice:
        """Return the index of one of ``n_options`` labelled options, with all probabilities."""
        ...


# --- abilities some backends have ------------------------------------------------------------------


@runtime_checkable
class SelfTestingModel(Protocol):
    """A backend that proves at start-up that it applies the constraint (every one but the test models)."""

    def self_test(self) -> None:
        """Raise :class:`~sopagent.errors.ConstraintNotEnforcedError` unless the constraint is applied."""
        ...


@runtime_checkable
class WarmableModel(Protocol):
    """A backend that compiles a policy's constraints ahead of its first turn."""

    def warm(self, schemas: list[type[BaseModel]], max_options: int = 8) -> None:
        """Compile the constraints of ``schemas`` and of choices among up to ``max_options``."""
        ...


@runtime_checkable
class PromptCachingModel(Protocol):
    """A backend that keeps a prompt prefix in a cache and can fill it ahead of a call."""

    def prefetch(self, prompt: ChatPrompt, upto: str) -> CallStats | None:
        """Evaluate ``prompt`` as rendered up to the last ``upto`` into the cache; decode nothing."""
        ...


@runtime_checkable
class ReadingLaneModel(Protocol):
    """A backend with a second context for follow-up readings, so they keep their own cached prefix."""

    def reading_lane(self) -> DecisionModel:
        """The model follow-up readings run on."""
        ...
