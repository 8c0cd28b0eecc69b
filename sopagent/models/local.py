"""What the in-process Outlines backends (llama.cpp, transformers) share.

Both compile a regex constraint per facts schema and per option count (cached), run one
constrained generation per call, validate the facts again after decoding, and read every option's
probability from the first constrained step. A backend supplies how to render a prompt, how to run
a generation, and how to record the first step's probabilities for its tensor library.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from sopagent.errors import ConstraintNotEnforcedError, ConstraintViolationError, ModelError
from sopagent.models.base import (
    OPTION_LABELS,
    SELF_TEST_PROMPT,
    CallStats,
    ChatPrompt,
    Choice,
    Extraction,
    M,
    check_option_count,
    facts_json_schema,
    validate_facts,
)

MAX_FACTS_TOKENS = 256
SELF_TEST_REGEX = r"zq[0-9]{2}"


class SelfTestFacts(BaseModel):
    """The JSON answer of the start-up self-test: two fields whose values no model writes unconstrained
    (so the opening, the key after a value and the values are all decoded under the constraint)."""

    colour: str = Field(pattern=f"^{SELF_TEST_REGEX}$")
    code: str = Field(pattern=f"^{SELF_TEST_REGEX}$")


@dataclass
class FactsAnswer:
    """A constrained JSON answer, what it cost, and each field value's probability (empty where the
    backend does not measure it)."""

    raw: str
    stats: CallStats
    probabilities: dict[str, float] = field(default_factory=dict)


def field_probabilities(raw: str, steps: list[tuple[bytes, float]]) -> dict[str, float]:
    """Each top-level field's probability in the JSON answer ``raw``: the product of the probabilities
    of the decoded tokens that wrote any part of its value (its choice between null and a value
    included), from ``steps`` (each token's bytes and the probability it was decoded with, in order;
    tokens prefilled with the prompt have probability 1). Empty when ``raw`` is not one JSON object."""
    text = b"".join(token for token, _ in steps).decode("utf-8", errors="ignore")
    spans = _value_spans(raw)
    if not spans:
        return {}
    ends: list[tuple[int, float]] = []  # each token's end offset in the text, and its probability
    written = b""
    for token, probability in steps:
        start = len(written.decode("utf-8", errors="ignore"))
        written += token
        ends.append((start, probability))
    bounds = [(start, ends[i + 1][0] if i + 1 < len(ends) else len(text), p) for i, (start, p) in enumerate(ends)]
    result: dict[str, float] = {}
    for name, (first, last) in spans.items():
        probability = 1.0
        for start, end, p in bounds:
            if start < last and end > first:
                probability *= p
        result[name] = round(probability, 4)
    return result


def _value_spans(raw: str) -> dict[str, tuple[int, int]]:
    """Where each top-level field's value lies in a JSON object's text (parsed by the json module)."""
    decoder = json.JSONDecoder()
    spans: dict[str, tuple[int, int]] = {}
    at = raw.find("{") + 1
    if at == 0:
        return {}
    try:
        while True:
            at = _skip(raw, at, " \n\t,")
            if at >= len(raw) or raw[at] == "}":
                return spans
            key, at = json.decoder.scanstring(raw, at + 1)  # type: ignore[attr-defined]
            at = _skip(raw, at, " \n\t:")
            _, end = decoder.raw_decode(raw, at)
            spans[key] = (at, end)
            at = end
    except (ValueError, IndexError):
        return {}


def _skip(text: str, at: int, characters: str) -> int:
    while at < len(text) and text[at] in characters:
        at += 1
    return at


class LocalConstrainedModel:
    """Extraction and choice for a backend that applies Outlines processors in process.

    Subclasses set ``name``, ``label_token_ids``, ``_backend`` (an Outlines backend) and
    ``_processors`` (an empty dict), and implement :meth:`render`, :meth:`_run` and
    :meth:`_recorder`. ``validation_error`` is the error raised when facts do not validate.
    """

    name: str
    label_token_ids: list[int]
    _backend: Any
    _processors: dict[str, Any]
    validation_error: type[ModelError] = ModelError
    constraint_install_fix: str = "pip install outlines==1.3.3"
    """How to fix a constrained generation that fails at start-up (shown by :meth:`self_test`)."""
    constraint_apply_fix: str = "pip install outlines==1.3.3 and check that nothing replaces the logits processor"
    """How to fix a constraint that is silently not applied (shown by :meth:`self_test`)."""

    def render(self, prompt: ChatPrompt) -> str:
        """The prompt as the text the model reads."""
        raise NotImplementedError

    def _run(self, text: str, processor: Any, max_tokens: int) -> tuple[str, CallStats]:
        raise NotImplementedError

    def _run_facts(self, text: str, processor: Any, schema: type[BaseModel]) -> FactsAnswer:
        """The constrained JSON answer for ``schema`` (a backend may decode it faster, never
        differently), with each field's probability where the backend measures it."""
        raw, stats = self._run(text, processor, MAX_FACTS_TOKENS)
        return FactsAnswer(raw, stats)

    def _recorder(self, inner: Any, token_ids: list[int]) -> Any:
        """A processor wrapping ``inner`` that keeps the first step's probabilities in ``.first``."""
        raise NotImplementedError

    # --- constraints --------------------------------------------------------------------------

    def processor(self, regex: str) -> tuple[Any, float]:
        """The compiled constraint for ``regex`` (cached) and the ms it took to get it."""
        started = time.perf_counter()
        processor = self._processors.get(regex)
        if processor is None:
            processor = self._backend.get_regex_logits_processor(regex)
            self._processors[regex] = processor
        return processor, (time.perf_counter() - started) * 1000

    @staticmethod
    def facts_regex(schema: type[BaseModel]) -> str:
        """The JSON regex Outlines builds for a facts schema.

        Every field is required in the output (so the model writes each key, in order, and says
        null explicitly); at most one space is allowed where JSON allows whitespace, which is how
        instruction-tuned models naturally write JSON.
        """
        from outlines_core.json_schema import build_regex_from_schema

        return build_regex_from_schema(json.dumps(facts_json_schema(schema)), r"[ ]?")

    @staticmethod
    def choice_regex(n_options: int) -> str:
        """A choice among ``n_options`` is one of their labels."""
        return "[" + OPTION_LABELS[:n_options] + "]"

    def warm(self, schemas: list[type[BaseModel]], max_options: int = 8) -> None:
        """Compile the constraints a policy will need, so that first turns are fast."""
        for schema in schemas:
            self.processor(self.facts_regex(schema))
        for n in range(2, max_options + 1):
            self.processor(self.choice_regex(n))

    # --- calls ----------------------------------------------------------------------------------

    def extract(self, prompt: ChatPrompt, schema: type[M]) -> Extraction:
        """Facts as JSON constrained to ``schema`` while decoding, validated again after."""
        processor, constraint_ms = self.processor(self.facts_regex(schema))
        processor.reset()
        answer = self._run_facts(self.render(prompt), processor, schema)
        raw, stats = answer.raw, answer.stats
        stats.constraint_ms = constraint_ms
        try:
            facts, invalid = validate_facts(schema, raw)
        except ValidationError as exc:
            raise self.validation_error(f"{self.name}: the facts did not validate against {schema.__name__}: "
                                        f"{exc.errors()[0]['msg']} at "
                                        f"{'.'.join(map(str, exc.errors()[0]['loc'])) or 'the answer'}",
                                        retryable=False, model_output=raw) from exc
        return Extraction(facts=facts, raw=raw, stats=stats, probabilities=answer.probabilities, invalid=invalid)

    def choose(self, prompt: ChatPrompt, n_options: int) -> Choice:
        """One of ``n_options`` labels (one decoded token) with every option's probability."""
        check_option_count(n_options)
        inner, constraint_ms = self.processor(self.choice_regex(n_options))
        recorder = self._recorder(inner, self.label_token_ids[:n_options])
        recorder.reset()
        raw, stats = self._run(self.render(prompt), recorder, 1)
        stats.constraint_ms = constraint_ms
        label = raw.strip()
        if len(label) != 1 or label not in OPTION_LABELS[:n_options]:
            raise ConstraintViolationError(f"{self.name} answered {raw!r}, not one of the labels "
                                           f"{OPTION_LABELS[:n_options]}")
        probabilities = [float(p) for p in recorder.first] if recorder.first is not None else []
        return Choice(index=OPTION_LABELS.index(label), probabilities=probabilities, raw=raw, stats=stats)

    # --- start-up self-test ---------------------------------------------------------------------

    def self_test(self) -> None:
        """Prove that the constraint is applied while decoding; raise if it is not.

        The model is asked a question whose natural answer is a word; unconstrained it must not
        match ``zq[0-9]{2}``, constrained it must. If Outlines fails open (numba missing, a
        processor dropped), the constrained answer is the natural one and we refuse to run.
        """
        text = self.render(SELF_TEST_PROMPT)
        free, _ = self._run(text, None, 4)
        if re.fullmatch(SELF_TEST_REGEX, free.strip()):
            raise ConstraintNotEnforcedError("constraint self-test is inconclusive: the unconstrained "
                                             f"answer {free!r} already matches the test pattern")
        processor, _ = self.processor(SELF_TEST_REGEX)
        processor.reset()
        try:
            constrained, _ = self._run(text, processor, 6)
        except ModelError as exc:
            raise ConstraintNotEnforcedError(f"constrained decoding failed at start-up: {exc}",
                                             fix=self.constraint_install_fix) from exc
        if not re.fullmatch(SELF_TEST_REGEX, constrained):
            raise ConstraintNotEnforcedError(
                f"constrained decoding is NOT being applied by {self.name} (asked for {SELF_TEST_REGEX!r}, got "
                f"{constrained!r}). sopagent refuses to run unconstrained.", fix=self.constraint_apply_fix)
        try:  # the JSON path decodes with its own loop: it must apply the constraint as well
            self.extract(SELF_TEST_PROMPT, SelfTestFacts)
        except ModelError as exc:
            raise ConstraintNotEnforcedError(
                f"constrained JSON decoding is NOT being applied by {self.name}: {exc}. sopagent refuses to "
                f"run unconstrained.", fix=self.constraint_apply_fix) from exc
