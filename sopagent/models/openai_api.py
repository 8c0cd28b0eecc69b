"""Backends that speak the OpenAI chat-completions API: OpenAI itself, vLLM, any compatible server.

Requests are shaped by Outlines' OpenAI model (``outlines.from_openai``: its type adapter writes
the messages and OpenAI's strict ``json_schema`` response format) and sent with the ``openai``
client, whose own ``timeout`` and ``max_retries`` settings give bounded retries with backoff for
timeouts, rate limits and server errors. Errors are normalized by Outlines and then raised as
one :class:`~sopagent.errors.BackendError` that says whether a retry helps.

How each flavour is constrained (the ``format`` option overrides the default):

* ``json_schema`` (OpenAI, vLLM >= 0.6, default for every flavour): ``response_format`` of type
  ``json_schema``. For OpenAI it is *strict*, and keywords strict mode rejects (``pattern``,
  ``format``, length and range bounds, ``default``) are removed from the request and checked
  after decoding instead, by validating the answer with the step's Pydantic model.
* ``json_object``: the llama-cpp-python server's form, ``{"type": "json_object", "schema": ...}``
  (it ignores ``json_schema`` response formats without an error).
* ``guided``: vLLM's ``extra_body={"guided_json": ...}`` (vLLM 0.4 to 0.11).
* ``structured_outputs``: vLLM's ``extra_body={"structured_outputs": {"json": ...}}`` (newer vLLM).

A choice is an object with one enum property, ``{"choice": "A" | "B" | ...}``. Its probabilities
come from the token log-probabilities at the label's position, renormalized over the allowed
labels; where the server returns none they are unknown (an empty list, recorded as None).
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from contextlib import contextmanager
from typing import Any, Iterator

from pydantic import ValidationError

from sopagent.errors import BackendError, ConstraintNotEnforcedError, ConstraintViolationError, ModelUnavailableError
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
from sopagent.models.spec import ModelSpec

try:
    import openai
    import outlines
    from outlines.exceptions import (
        APIConnectionError,
        APIError,
        APITimeoutError,
        RateLimitError,
        normalize_provider_errors,
    )
    from outlines.inputs import Chat
    from outlines.types import JsonSchema
except ImportError as exc:  # pragma: no cover - broken installs only
    raise ModelUnavailableError(f"the OpenAI backends need openai and outlines ({exc}).",
                                fix="pip install -e .") from exc

MAX_FACTS_TOKENS = 256
MAX_CHOICE_TOKENS = 16
TOP_LOGPROBS = 20
SELF_TEST_VALUES = ["zq17", "zq58"]
STRICT_UNSUPPORTED = ("pattern", "format", "minLength", "maxLength", "minimum", "maximum",
                      "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "default", "minItems",
                      "maxItems")
"""Schema keywords removed from OpenAI strict-mode requests and checked after decoding instead."""
DEFAULT_FORMAT = {"openai": "json_schema", "vllm": "json_schema", "openai-compatible": "json_schema"}
UNREACHABLE = (APIConnectionError, APITimeoutError, RateLimitError)
"""Failures that say nothing about whether the server applies constraints."""
SERVER_KEY_PLACEHOLDER = "not-needed"
"""Sent to servers that need no key (vLLM and llama.cpp servers started without ``--api-key``)."""


def strip_keywords(schema: dict[str, Any], keywords: tuple[str, ...] = STRICT_UNSUPPORTED) -> dict[str, Any]:
    """A copy of ``schema`` without ``keywords`` in any subschema (property *names* are kept)."""

    def walk(node: Any, in_properties: bool = False) -> Any:
        if isinstance(node, list):
            return [walk(item) for item in node]
        if not isinstance(node, dict):
            return node
        if in_properties:  # a mapping from property names to subschemas
            return {name: walk(sub) for name, sub in node.items()}
        return {key: walk(value, in_properties=key in ("properties", "$defs", "definitions"))
                for key, value in node.items() if key not in keywords}

    return walk(copy.deepcopy(schema))


def choice_schema(n_options: int) -> dict[str, Any]:
    """A choice among ``n_options`` as an object with one enum property."""
    return {"type": "object", "title": "Choice",
            "properties": {"choice": {"type": "string", "enum": list(OPTION_LABELS[:n_options])}},
            "required": ["choice"], "additionalProperties": False}


def _field(item: Any, name: str) -> Any:
    """A field of a logprob entry, whether the client parsed it into an object or left a dict."""
    return item.get(name) if isinstance(item, dict) else getattr(item, name, None)


def label_probabilities(raw: str, tokens: list[Any], labels: str) -> list[float]:
    """Probabilities of ``labels`` at the position where ``raw`` (a choice object) names its label.

    ``tokens`` are the response's ``logprobs.content`` entries (``token``, ``logprob``,
    ``top_logprobs``). Returns an empty list when the position or the alternatives are unknown.
    """
    try:
        label = json.loads(raw)["choice"]
        position = raw.index(f'"{label}"', raw.index('"choice"') + len('"choice"')) + 1
    except (ValueError, KeyError, TypeError):
        return []
    offset = 0
    for token in tokens:
        text = _field(token, "token") or ""
        if offset <= position < offset + len(text):
            prefix = text[: position - offset]
            mass = dict.fromkeys(labels, 0.0)
            alternatives = list(_field(token, "top_logprobs") or [])
            if not any(_field(alt, "token") == text for alt in alternatives):
                alternatives.append(token)
            for alt in alternatives:
                alt_text = _field(alt, "token") or ""
                if not alt_text.startswith(prefix) or len(alt_text) <= len(prefix):
                    continue
                letter, rest = alt_text[len(prefix)], alt_text[len(prefix) + 1:]
                if letter in mass and set(rest) <= set('"} \n'):
                    mass[letter] += math.exp(float(_field(alt, "logprob")))
            total = sum(mass.values())
            return [mass[letter] / total for letter in labels] if total > 0 else []
        offset += len(text)
    return []


class OpenAIChatModel:
    """Constrained extraction and choice over the OpenAI chat-completions API."""

    def __init__(self, spec: ModelSpec, *, client: Any = None) -> None:
        """
        Args:
            spec: an ``openai:``, ``openai-compatible:`` or ``vllm:`` spec.
            client: an ``openai.OpenAI`` client to use instead of building one (tests).
        """
        if spec.backend not in DEFAULT_FORMAT:
            raise ModelUnavailableError(f"{spec.display} is not an OpenAI-API spec")
        self.spec = spec
        self.name = spec.display
        self.flavor = spec.backend
        self.model_name = spec.target if spec.backend == "openai" else (spec.model or "")
        self.format = str(spec.option("format", DEFAULT_FORMAT[spec.backend]))
        self.strict = self.flavor == "openai" and self.format == "json_schema"
        self.logprobs = bool(spec.option("logprobs", True))
        if client is None:
            key = os.environ.get(spec.key_env)
            if not key and spec.backend == "openai":
                raise ModelUnavailableError(
                    f"{spec.display} needs an API key in ${spec.key_env}.", fix=f"export {spec.key_env}=... "
                    "(or name another variable with ?key_env=VAR in the spec or key_env in sopagent.toml)")
            client = openai.OpenAI(
                api_key=key or SERVER_KEY_PLACEHOLDER,
                base_url=None if spec.backend == "openai" else spec.target,
                timeout=float(spec.option("timeout", 30.0)),
                max_retries=int(spec.option("retries", 2)))
        self.client = client
        self.outlines_model = outlines.from_openai(client, self.model_name)

    # --- requests --------------------------------------------------------------------------------

    def request_format(self, schema: dict[str, Any], name: str) -> dict[str, Any]:
        """The keyword arguments that constrain the answer to ``schema`` on this flavour."""
        if self.format == "json_schema":
            if self.strict:  # Outlines writes OpenAI's strict form (additionalProperties false)
                return self.outlines_model.type_adapter.format_output_type(JsonSchema(strip_keywords(schema)))
            return {"response_format": {"type": "json_schema",
                                        "json_schema": {"name": name, "schema": schema}}}
        if self.format == "json_object":
            return {"response_format": {"type": "json_object", "schema": schema}}
        if self.format == "guided":
            return {"extra_body": {"guided_json": schema}}
        return {"extra_body": {"structured_outputs": {"json": schema}}}

    @contextmanager
    def _normalized(self, what: str) -> Iterator[None]:
        try:
            with normalize_provider_errors("openai"):
                yield
        except APIError as exc:
            status = f" (HTTP {exc.status_code})" if exc.status_code else ""
            advice = ("retries are exhausted; try again later" if exc.retryable else
                      f"check the model spec {self.name!r}, the key in ${self.spec.key_env} and the server")
            raise BackendError(f"{self.name}: {what} failed: {type(exc).__name__}{status}: "
                               f"{exc.original_exception or exc}", fix=advice,
                               retryable=exc.retryable) from exc

    def complete(self, prompt: ChatPrompt, schema: dict[str, Any], name: str, max_tokens: int,
                 logprobs: bool = False) -> tuple[str, Any, CallStats]:
        """One constrained chat completion: the answer text, its logprobs (or None) and its cost."""
        limit = "max_completion_tokens" if self.flavor == "openai" else "max_tokens"  # OpenAI's newer name
        kwargs: dict[str, Any] = {"model": self.model_name, limit: max_tokens, "temperature": 0.0,
                                  **self.request_format(schema, name)}
        if logprobs:
            kwargs.update(logprobs=True, top_logprobs=TOP_LOGPROBS)
        messages = self.outlines_model.type_adapter.format_input(Chat(prompt.messages()))
        started = time.perf_counter()
        with self._normalized(f"the {name} request"):
            response = self.client.chat.completions.create(messages=messages, **kwargs)
        stats = CallStats(ms=(time.perf_counter() - started) * 1000)
        if response.usage is not None:
            stats.prompt_tokens = response.usage.prompt_tokens or 0
            stats.generated_tokens = response.usage.completion_tokens or 0
        if not response.choices:
            raise BackendError(f"{self.name}: the server returned no answer to the {name} request", retryable=True)
        choice = response.choices[0]
        message = choice.message
        if getattr(message, "refusal", None):
            raise BackendError(f"{self.name} refused the {name} request: {message.refusal}", retryable=False)
        if choice.finish_reason == "length":
            raise BackendError(f"{self.name}: the {name} answer was cut off at {max_tokens} tokens",
                               retryable=False)
        content = message.content or ""
        tokens = getattr(getattr(choice, "logprobs", None), "content", None)
        return content, tokens, stats

    # --- the two calls ---------------------------------------------------------------------------

    def extract(self, prompt: ChatPrompt, schema: type[M]) -> Extraction:
        """Facts as JSON constrained by the server, validated again with the Pydantic model."""
        raw, _, stats = self.complete(prompt, facts_json_schema(schema), schema.__name__, MAX_FACTS_TOKENS)
        try:
            facts, invalid = validate_facts(schema, raw)
        except ValidationError as exc:
            raise BackendError(f"{self.name}: the facts did not validate against {schema.__name__}: "
                               f"{exc.errors()[0]['msg']} at "
                               f"{'.'.join(map(str, exc.errors()[0]['loc'])) or 'the answer'}",
                                        retryable=False, model_output=raw) from exc
        return Extraction(facts=facts, raw=raw, stats=stats, invalid=invalid)

    def choose(self, prompt: ChatPrompt, n_options: int) -> Choice:
        """One of ``n_options`` labels; probabilities from logprobs where the server returns them."""
        check_option_count(n_options)
        labels = OPTION_LABELS[:n_options]
        raw, tokens, stats = self.complete(prompt, choice_schema(n_options), "Choice", MAX_CHOICE_TOKENS,
                                           logprobs=self.logprobs)
        try:
            label = json.loads(raw)["choice"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ConstraintViolationError(f"{self.name} answered {raw[:80]!r}, not a choice object") from exc
        if not isinstance(label, str) or label not in labels or len(label) != 1:
            raise ConstraintViolationError(f"{self.name} answered {label!r}, not one of the labels {labels}")
        probabilities = label_probabilities(raw, tokens or [], labels)
        return Choice(index=labels.index(label), probabilities=probabilities, raw=raw, stats=stats)

    # --- start-up self-test ------------------------------------------------------------------

    def self_test(self) -> None:
        """Ask for something only an applied constraint can produce; refuse to run if it is ignored.

        The question's natural answer is a word ("blue"); the schema allows only ``zq17`` or
        ``zq58``. A server that silently ignores the structured-output parameters (older vLLM,
        the llama.cpp server given ``json_schema``) answers the natural word.
        """
        schema = {"type": "object", "title": "SelfTest",
                  "properties": {"answer": {"type": "string", "enum": SELF_TEST_VALUES}},
                  "required": ["answer"], "additionalProperties": False}
        fix = {"openai": "use a model that supports structured outputs (e.g. gpt-4.1-mini)",
               "vllm": "upgrade to vLLM >= 0.6 (older versions ignore response_format), or try ?format=guided",
               "openai-compatible": "for the llama-cpp-python server add ?format=json_object to the spec; "
                                    "for vLLM use the vllm: backend"}[self.flavor]
        try:
            raw, _, _ = self.complete(SELF_TEST_PROMPT, schema, "SelfTest", 24)
        except BackendError as exc:
            if isinstance(exc.__cause__, UNREACHABLE):
                raise  # the server is down or slow: not a verdict on its constraints
            raise ConstraintNotEnforcedError(f"{self.name} rejected the structured-output request at start-up: "
                                             f"{exc}", fix=fix) from exc
        try:
            answer = json.loads(raw).get("answer")
        except (ValueError, AttributeError):
            answer = None
        if answer not in SELF_TEST_VALUES:
            raise ConstraintNotEnforcedError(
                f"constrained decoding is NOT being applied by {self.name} (format {self.format}): asked for "
                f"one of {SELF_TEST_VALUES}, got {raw[:80]!r}. sopagent refuses to run unconstrained.", fix=fix)
