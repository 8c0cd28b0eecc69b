"""Model backends behind one small interface (:class:`~sopagent.models.base.DecisionModel`)."""

from __future__ import annotations

import os
from typing import Callable

from sopagent.models.base import ChatPrompt, Choice, DecisionModel, Extraction, OPTION_LABELS
from sopagent.models.scripted import ScriptedModel

__all__ = ["ChatPrompt", "Choice", "DecisionModel", "Extraction", "OPTION_LABELS", "ScriptedModel",
           "load_model"]

MODEL_ENV = "SOPAGENT_MODEL"
SCRIPTED_PREFIX = "scripted:"
"""Test aid: ``--model scripted:FILE.json`` runs a ScriptedModel (JSON ``{"facts": [...], "choices": [...]}``)."""


def load_model(path: str | None = None, *, self_test: bool = True,
               progress: Callable[[int, int], None] | None = None) -> DecisionModel:
    """Load a GGUF model with llama.cpp: ``path``, else ``$SOPAGENT_MODEL``, else the embedded default.

    The constraint self-test runs unless ``self_test`` is False; a model whose constraint is not
    enforced is never returned.
    """
    chosen = path or os.environ.get(MODEL_ENV)
    if chosen and chosen.startswith(SCRIPTED_PREFIX):
        return _scripted_from_file(chosen.removeprefix(SCRIPTED_PREFIX))
    from sopagent.models.embedded import embedded_model_path
    from sopagent.models.llamacpp import LlamaCppModel

    chosen = chosen or str(embedded_model_path(progress))
    model = LlamaCppModel(chosen)
    if self_test:
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
        raise ModelUnavailableError(f"cannot read the scripted model {path}: {exc}\n"
                                    '  fix: give a JSON file {"facts": [...], "choices": [...]}') from exc
    return ScriptedModel(facts=script.get("facts", []), choices=script.get("choices", []))
