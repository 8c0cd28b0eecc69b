"""Settings: one object for every command, from flags, ``$SOPAGENT_*`` and ``sopagent.toml``.

Each setting is taken from the first of these that sets it:

1. a command-line flag (``--model``, ``--db``, ``--confidence``);
2. the environment: ``SOPAGENT_MODEL``, ``SOPAGENT_DB``, ``SOPAGENT_CACHE``, and nested ones with a
   double underscore (``SOPAGENT_AGENT__CONFIDENCE_THRESHOLD=0.6``, ``SOPAGENT_MODEL_OPTIONS__TIMEOUT=20``);
3. the config file: ``--config PATH``, else ``sopagent.toml`` in the current folder::

       db = "postgresql+psycopg://support@db/sopagent"
       [model]
       spec = "openai:gpt-4.1-mini"      # the model spec (sopagent.models.spec)
       key_env = "TEAM_KEY"              # options of the spec: key_env, timeout, retries, format, logprobs
       [agent]
       confidence_threshold = 0.6
       approve_when_confidence_unknown = true

4. the defaults below (the embedded model, ``sopagent.db`` in the current folder).

A spec's own ``?options`` win over the ``[model]`` table's. :mod:`sopagent.compose` builds the
store, the model and the agent from a :class:`Settings`.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, InitSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from sopagent.errors import ModelSpecError

CONFIG_FILE = "sopagent.toml"
"""The config file read from the current folder when no ``--config`` is given."""
ENV_PREFIX = "SOPAGENT_"
"""Prefix of the environment variables that set a setting."""
DEFAULT_DB_URL = "sqlite:///sopagent.db"
"""The audit store when nothing names one: a SQLite file in the current folder."""


class ModelOptions(BaseModel):
    """Options for the model spec, from the config file's ``[model]`` table (the spec's own win)."""

    model_config = ConfigDict(extra="forbid")

    key_env: str | None = None
    """The environment variable that holds the API key of a remote model."""
    timeout: float | None = None
    """Seconds a remote model call may take."""
    retries: int | None = None
    """Retries of a remote model call that failed for a transient reason."""
    format: str | None = None
    """How a structured-output request is written (see :data:`sopagent.models.spec.FORMATS`)."""
    logprobs: bool | None = None
    """Ask a remote model for log-probabilities."""
    threads: int | None = Field(default=None, ge=1)
    """CPU threads of an in-process llama.cpp model."""

    def given(self) -> dict[str, Any]:
        """The options that are set."""
        return self.model_dump(exclude_none=True)


class AgentSettings(BaseModel):
    """How the agent holds replies for an operator, from the ``[agent]`` table."""

    model_config = ConfigDict(extra="forbid")

    confidence_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    """Model choices below this probability wait for an operator (None: the policy's own)."""
    approve_when_confidence_unknown: bool | None = None
    """Hold a model choice for an operator when the backend gives no probability (None: the policy's)."""


_CONFIG_DOCUMENT: ContextVar[dict[str, Any]] = ContextVar("sopagent_config_document", default={})
"""The config file's settings while :meth:`Settings.load` builds an object (the lowest source but defaults)."""


class Settings(BaseSettings):
    """Every setting a sopagent command reads; build it with :meth:`load`."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid",
                                      protected_namespaces=())

    model: str = ""
    """The model spec (``BACKEND:TARGET?options``; empty: the embedded model)."""
    model_options: ModelOptions = Field(default_factory=lambda: ModelOptions())
    """Options for the spec (the ``[model]`` table but its ``spec``)."""
    db: str = DEFAULT_DB_URL
    """The audit store's database URL; a bare path is a SQLite file."""
    cache: Path = Field(default_factory=lambda: Path.home() / ".cache" / "sopagent")
    """Where the embedded model and the llama.cpp build marker are kept."""
    agent: AgentSettings = Field(default_factory=lambda: AgentSettings())
    """The agent's hold-for-approval settings."""
    config_path: str | None = Field(default=None, exclude=True)
    """The config file the settings were read from, if any (for messages)."""

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flags, then the environment, then the config file."""
        return init_settings, env_settings, InitSettingsSource(settings_cls, _CONFIG_DOCUMENT.get())

    @classmethod
    def load(cls, config: str | os.PathLike[str] | None = None, **flags: Any) -> "Settings":
        """The settings in force: ``flags`` (None values are unset), ``$SOPAGENT_*``, the config file.

        ``agent`` and ``model_options`` flags are dicts of the fields they set. Raises
        :class:`~sopagent.errors.ModelSpecError` naming the file, the key and the fix.
        """
        document, path = read_config(config)
        given = {key: value for key, value in flags.items() if value is not None}
        for table in ("agent", "model_options"):
            if isinstance(given.get(table), dict):
                given[table] = {k: v for k, v in given[table].items() if v is not None}
        token = _CONFIG_DOCUMENT.set(document)
        try:
            return cls(**given, config_path=path)
        except ValidationError as exc:
            raise settings_error(exc, path, given) from None
        finally:
            _CONFIG_DOCUMENT.reset(token)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Settings":
        """The settings in force for a command parsed with :func:`add_setting_flags`."""
        return cls.load(getattr(args, "config", None), model=getattr(args, "model", None),
                        db=getattr(args, "db", None), agent={"confidence_threshold": getattr(args, "confidence", None)})

    def database_url(self) -> str:
        """The audit store's URL, a bare path read as a SQLite file."""
        return as_database_url(self.db)


def as_database_url(value: str) -> str:
    """A database URL, or a bare path read as a SQLite file."""
    return value if "://" in value else f"sqlite:///{value}"


FLAGS = {"confidence_threshold": "confidence"}
"""Flags whose name is not their setting's (:func:`add_setting_flags`)."""
TABLES: dict[str, type[BaseModel]] = {"model_options": ModelOptions, "agent": AgentSettings}
"""The settings that are tables of the config file, by field name."""


def settings_error(exc: ValidationError, path: str | None, given: dict[str, Any]) -> ModelSpecError:
    """The first problem of ``exc`` as a message that names where the value came from (a flag, the
    environment variable, or the config file with its table and key) and the fix."""
    problem = exc.errors()[0]
    loc = [str(part) for part in problem["loc"]]
    table = loc[0] if len(loc) > 1 and loc[0] in TABLES else None
    shown = "[model]" if table == "model_options" else f"[{table}]" if table else "the top level"
    key = loc[-1] if loc else "?"
    if problem["type"] == "extra_forbidden":
        known = TABLES[table].model_fields if table else [f for f in Settings.model_fields if f != "config_path"]
        return ModelSpecError(f"{path or 'settings'}: unknown key(s) in {shown}: {key}.",
                              fix=f"use {', '.join(['spec', *known] if table == 'model_options' else known)}")
    flag: Any = given
    for part in loc:
        flag = flag.get(part) if isinstance(flag, dict) else None
    env = ENV_PREFIX + "__".join(loc).upper()
    if flag is not None:
        source = f"--{FLAGS.get(key, key)}"
    elif env in os.environ:
        source = f"${env}"
    else:
        source = f"{path}: {key} in {shown}" if path else key
    return ModelSpecError(f"{source}: {problem['msg']} (got {problem.get('input')!r}).",
                          fix=f"correct {key} (see docs/backends.md, 'Configuration')")


def read_config(path: str | os.PathLike[str] | None = None) -> tuple[dict[str, Any], str | None]:
    """The config file as settings (``[model] spec`` is ``model``, the rest of ``[model]`` is
    ``model_options``) and its path: ``path``, else ``./sopagent.toml`` if it exists, else nothing."""
    if path is None:
        candidate = Path.cwd() / CONFIG_FILE
        if not candidate.is_file():
            return {}, None
        path = candidate
    file = Path(path)
    try:
        with file.open("rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        raise ModelSpecError(f"config file not found: {file}", fix="check the --config path") from None
    except tomllib.TOMLDecodeError as exc:
        raise ModelSpecError(f"{file}: not valid TOML: {exc}",
                             fix="correct the file (see docs/backends.md, 'Configuration')") from None
    table = document.pop("model", {})
    if not isinstance(table, dict):
        raise ModelSpecError(f"{file}: 'model' must be a table.",
                             fix="write [model] then spec = \"...\" on the next line")
    if "spec" in table:
        document["model"] = table.pop("spec")
    if table:
        document["model_options"] = table
    return document, str(file)


def add_setting_flags(parser: argparse.ArgumentParser, *, model: bool = True, confidence: bool = False) -> None:
    """Give a command the flags that set settings: ``--db``, ``--config`` and, where it runs a model,
    ``--model`` (and ``--confidence``); read them back with :meth:`Settings.from_args`."""
    parser.add_argument("--db", help="audit store URL or SQLite file (default $SOPAGENT_DB, then sopagent.toml's db, "
                                     "then sqlite:///sopagent.db)")
    parser.add_argument("--config", help=f"config file (default ./{CONFIG_FILE}; see docs/backends.md)")
    if model:
        parser.add_argument("--model", help="model spec, e.g. PATH.gguf, openai:gpt-4.1-mini, "
                                            "vllm:http://host:8000/v1#NAME, echo (default $SOPAGENT_MODEL, "
                                            "then sopagent.toml, then the embedded model)")
    if confidence:
        parser.add_argument("--confidence", type=float, default=None,
                            help="model choices below this probability wait for an operator (default: [agent] "
                                 "confidence_threshold, then the policy's)")
