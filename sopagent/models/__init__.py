"""Model backends behind one small interface (:class:`~sopagent.models.base.DecisionModel`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from sopagent.models.base import OPTION_LABELS, ChatPrompt, Choice, DecisionModel, Extraction, SelfTestingModel
from sopagent.models.scripted import ScriptedModel
from sopagent.models.spec import ModelSpec, parse_spec, spec_of
from sopagent.settings import Settings

__all__ = ["ChatPrompt", "Choice", "DecisionModel", "Extraction", "OPTION_LABELS", "ScriptedModel",
           "ModelSpec", "build_model", "load_model", "parse_spec", "spec_of"]


def load_model(spec: str | None = None, *, self_test: bool = True,
               progress: Callable[[int, int], None] | None = None,
               config: str | os.PathLike[str] | None = None, threads: int | None = None,
               settings: Settings | None = None) -> DecisionModel:
    """Load the model a spec names (see :mod:`sopagent.models.spec`).

    ``settings`` name it; without them, ``spec`` (``--model``), else ``$SOPAGENT_MODEL``, else the
    config file's ``[model] spec`` (``config``, else ``./sopagent.toml``), else the embedded default
    (:meth:`Settings.load`). The constraint self-test runs unless ``self_test`` is False; a model
    whose constraint is not enforced is never returned. ``threads`` is the CPU threads of an
    in-process llama.cpp model when the spec does not set ``?threads=`` itself.
    """
    settings = settings if settings is not None else Settings.load(config, model=spec)
    parsed = spec_of(settings)
    if threads and parsed.option("threads") is None:
        from dataclasses import replace

        parsed = replace(parsed, options={**parsed.options, "threads": threads})
    model = build_model(parsed, progress=progress, cache=settings.cache)
    if self_test and isinstance(model, SelfTestingModel):
        model.self_test()
    return model


def _scripted_from_file(path: str) -> DecisionModel:
    """Test aid for subprocess tests: a ScriptedModel whose script is a JSON file."""
    import json

    from sopagent.errors import ModelUnavailableError

    try:
        with open(path, encoding="utf-8") as handle:
            script = json.load(handle)
    except (OSError, ValueError) as exc:
        raise ModelUnavailableError(f"cannot read the scripted model {path}: {exc}",
                                    fix='give a JSON file {"facts": [...], "choices": [...]}') from exc
    return ScriptedModel(facts=script.get("facts", []), choices=script.get("choices", []))


def build_model(spec: ModelSpec, *, progress: Callable[[int, int], None] | None = None,
                cache: Path | None = None) -> DecisionModel:
    """Construct the backend for a parsed spec (no self-test); bundled models are joined under ``cache``
    (default: the ``cache`` setting)."""
    if spec.backend == "echo":
        from sopagent.models.echo import EchoModel

        return EchoModel(float(spec.target))
    if spec.backend == "scripted":
        return _scripted_from_file(spec.target)
    if spec.backend == "uniform":
        from sopagent.models.uniform import UniformModel

        return UniformModel()
    if spec.backend == "llamacpp":
        from sopagent.models.embedded import embedded_model_path
        from sopagent.models.llamacpp import LlamaCppModel

        path = str(embedded_model_path(progress, cache)) if spec.target == "embedded" else spec.target
        return LlamaCppModel(path, n_threads=spec.option("threads"))
    if spec.backend in ("openai", "openai-compatible", "vllm"):
        from sopagent.models.openai_api import OpenAIChatModel

        return OpenAIChatModel(spec)
    if spec.backend == "transformers":
        from sopagent.models.hf import TransformersModel

        return TransformersModel(spec.target, cache=cache)
    from sopagent.errors import ModelSpecError

    raise ModelSpecError(f"the {spec.backend!r} backend is not available in this installation.",
                         fix="use llamacpp:, openai:, openai-compatible:, vllm: or transformers:")
