"""Model specs: one setting names the backend and the model, wherever it comes from.

A spec is ``BACKEND:TARGET`` (see the README table)::

    llamacpp:models/qwen.gguf                        a local GGUF file, in process
    llamacpp:embedded                                the embedded default (same as no spec)
    openai:gpt-4.1-mini                              OpenAI, strict JSON-schema structured outputs
    openai-compatible:http://host:8000/v1#model      any OpenAI-compatible server
    vllm:http://host:8000/v1#model                   a vLLM server
    transformers:PATH                                a Hugging Face model folder or GGUF file
    echo  /  echo:0.05                               the test model: facts from the message as JSON
    scripted:answers.json                            the test model that answers from a script
    uniform                                          the model that reads nothing (the procedure alone)

A bare path keeps meaning a GGUF file, and no spec means the embedded model. Options follow a
``?`` as ``key=value`` pairs joined by ``&`` (``openai:gpt-4.1-mini?key_env=TEAM_KEY&timeout=20``).
Secrets never go in a spec: API keys are read from the environment variable the spec names
(``key_env``, default ``OPENAI_API_KEY``), so :attr:`ModelSpec.display` -- what the audit log
records as the model -- never holds one.

The spec is the ``model`` setting (:mod:`sopagent.settings`): ``--model``, else ``$SOPAGENT_MODEL``,
else the ``[model]`` table of the config file, else the embedded model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from sopagent.errors import ModelSpecError
from sopagent.settings import Settings

DEFAULT_KEY_ENV = "OPENAI_API_KEY"

BACKENDS = ("llamacpp", "openai", "openai-compatible", "vllm", "transformers", "echo", "scripted", "uniform")
"""Known backend names; ``echo``, ``scripted`` and ``uniform`` are the test models (:data:`TEST_BACKENDS`)."""
TEST_BACKENDS = ("echo", "scripted", "uniform")
"""Test models: no language model, no start-up self-test."""
URL_BACKENDS = ("openai-compatible", "vllm")
OPTION_TYPES: dict[str, type] = {"key_env": str, "timeout": float, "retries": int, "format": str,
                                 "logprobs": bool, "threads": int}
"""Options a spec may carry, with their types."""
SECRET_OPTIONS = ("key", "api_key", "apikey", "token", "password", "secret")
FORMATS = ("json_schema", "json_object", "guided", "structured_outputs")
"""How the structured-output request is written: OpenAI's ``response_format`` json_schema, the
llama.cpp server's ``json_object`` with a ``schema``, or vLLM's ``guided_json`` or
``structured_outputs`` extra body."""


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec."""

    backend: str
    """One of :data:`BACKENDS`."""
    target: str
    """A file or folder path, an OpenAI model name, or a server base URL."""
    model: str | None = None
    """The model name on a server (the ``#fragment`` of URL specs)."""
    options: Mapping[str, Any] = field(default_factory=dict)
    """Typed options (see :data:`OPTION_TYPES`)."""

    @property
    def display(self) -> str:
        """The spec without secrets or options: what the audit log records as the model."""
        text = f"{self.backend}:{self.target}"
        return f"{text}#{self.model}" if self.model else text

    @property
    def key_env(self) -> str:
        """The environment variable that holds the API key."""
        return str(self.options.get("key_env") or DEFAULT_KEY_ENV)

    def option(self, name: str, default: Any = None) -> Any:
        """An option's value, or ``default``."""
        return self.options.get(name, default)


def _parse_options(text: str, spec: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        if key.lower() in SECRET_OPTIONS:
            raise ModelSpecError(
                f"model spec {redact(spec)!r} carries a secret ({key}=...); secrets never go in a spec "
                "because the spec is recorded in the audit log.", fix="put the key in an environment "
                f"variable and name it: ?key_env=MY_KEY_VARIABLE (default {DEFAULT_KEY_ENV})")
        kind = OPTION_TYPES.get(key)
        if kind is None:
            raise ModelSpecError(f"unknown option {key!r} in model spec {redact(spec)!r}.", fix=f"use one of "
                                 f"{', '.join(OPTION_TYPES)}")
        options[key] = _coerce(key, value, kind)
    return options


def _coerce(key: str, value: Any, kind: type) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("1", "true", "yes", "on"):
            return True
        if str(value).lower() in ("0", "false", "no", "off"):
            return False
        raise ModelSpecError(f"option {key}={value!r} is not a yes/no value.", fix=f"{key}=true or {key}=false")
    try:
        coerced = kind(value)
    except (TypeError, ValueError):
        raise ModelSpecError(f"option {key}={value!r} is not a {kind.__name__}.", fix=f"e.g. "
                             f"{key}={'20' if kind is not str else 'NAME'}") from None
    if key == "threads" and coerced < 1:
        raise ModelSpecError(f"threads={coerced} must be at least 1.", fix="e.g. threads=2")
    if key == "format" and coerced not in FORMATS:
        raise ModelSpecError(f"format={coerced!r} is not known.", fix=f"use one of {', '.join(FORMATS)}")
    return coerced


def redact(spec: str) -> str:
    """The spec with any URL password and secret-looking option values replaced."""
    if "://" in spec:
        scheme, rest = spec.split(":", 1)
        parts = urlsplit(rest)
        if parts.password:
            netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
            rest = urlunsplit(parts._replace(netloc=netloc))
        spec = f"{scheme}:{rest}"
    head, _, query = spec.partition("?")
    if not query:
        return spec
    fragment = ""
    if "#" in query:
        query, fragment = query.split("#", 1)
        fragment = "#" + fragment
    pairs = ["=".join((k, "***" if k.lower() in SECRET_OPTIONS else v))
             for k, v in parse_qsl(query, keep_blank_values=True)]
    return f"{head}?{'&'.join(pairs)}{fragment}"


def parse_spec(text: str | os.PathLike[str]) -> ModelSpec:
    """Parse a spec string; a bare path means a GGUF file under llama.cpp."""
    spec = str(text).strip()
    if not spec:
        return ModelSpec("llamacpp", "embedded")
    if spec == "echo" or spec.startswith("echo:"):
        delay = spec.partition(":")[2] or "0"
        try:
            if float(delay) < 0:
                raise ValueError(delay)
        except ValueError:
            raise ModelSpecError(f"echo:{delay} is not a delay", fix="write echo or echo:SECONDS (e.g. echo:0.05)") \
                from None
        return ModelSpec("echo", delay)
    if spec == "uniform" or spec.startswith("uniform:"):
        if spec != "uniform":
            raise ModelSpecError(f"{spec!r}: the uniform model takes no target", fix="write uniform")
        return ModelSpec("uniform", "")
    backend, sep, rest = spec.partition(":")
    if not sep or backend not in BACKENDS or (len(backend) == 1 and os.name == "nt"):
        if Path(spec).suffix.lower() != ".gguf" and not Path(spec).exists() and ":" in spec:
            raise ModelSpecError(
                f"unknown model backend {backend!r} in {redact(spec)!r}.", fix=f"start the spec with one of "
                f"{', '.join(BACKENDS)} (for example openai:gpt-4.1-mini), or pass a path to a .gguf file")
        return ModelSpec("llamacpp", spec)  # a bare path: a GGUF file, as before specs existed
    if backend in URL_BACKENDS:
        return _parse_url_spec(backend, rest, spec)
    target, _, query = rest.partition("?")
    if not target:
        raise ModelSpecError(f"model spec {spec!r} names no {'model' if backend == 'openai' else 'path'}.",
                             fix=f"e.g. {_example(backend)}")
    if backend == "llamacpp" and target in ("embedded", "default"):
        target = "embedded"
    return ModelSpec(backend, target, None, _parse_options(query, spec))


def _parse_url_spec(backend: str, rest: str, spec: str) -> ModelSpec:
    parts = urlsplit(rest)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ModelSpecError(f"model spec {redact(spec)!r} needs a server URL.", fix=f"e.g. {_example(backend)}")
    if parts.password or parts.username:
        raise ModelSpecError(f"model spec {redact(spec)!r} carries credentials in its URL; the spec is recorded "
                             "in the audit log.", fix="remove user:password@ and put the key in an environment "
                             f"variable named by ?key_env=VAR (default {DEFAULT_KEY_ENV})")
    if not parts.fragment:
        raise ModelSpecError(f"model spec {redact(spec)!r} does not name the model served there.",
                             fix=f"add #MODEL-NAME, e.g. {_example(backend)}")
    base = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
    return ModelSpec(backend, base, parts.fragment, _parse_options(parts.query, spec))


def _example(backend: str) -> str:
    return {
        "llamacpp": "llamacpp:models/model.gguf",
        "openai": "openai:gpt-4.1-mini",
        "openai-compatible": "openai-compatible:http://127.0.0.1:8000/v1#model-name",
        "vllm": "vllm:http://127.0.0.1:8000/v1#Qwen/Qwen2.5-1.5B-Instruct",
        "transformers": "transformers:path/to/model-folder",
        "scripted": "scripted:answers.json",
    }[backend]


def spec_of(settings: Settings) -> ModelSpec:
    """The spec the settings name, with the ``[model]`` table's options where the spec sets none."""
    spec = parse_spec(settings.model)
    defaults = {key: _coerce(key, value, OPTION_TYPES[key]) for key, value in settings.model_options.given().items()}
    return replace(spec, options={**defaults, **spec.options}) if defaults else spec
