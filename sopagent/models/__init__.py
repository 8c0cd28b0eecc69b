"""Model backends behind one small interface (:class:`~sopagent.models.base.DecisionModel`)."""

from __future__ import annotations

import os
from typing import Callable

from sopagent.models.base import ChatPrompt, Choice, DecisionModel, Extraction, OPTION_LABELS
from sopagent.models.scripted import ScriptedModel

__all__ = ["ChatPrompt", "Choice", "DecisionModel", "Extraction", "OPTION_LABELS", "ScriptedModel",
           "load_model"]

MODEL_ENV = "SOPAGENT_MODEL"


def load_model(path: str | None = None, *, self_test: bool = True,
               progress: Callable[[int, int], None] | None = None) -> DecisionModel:
    """Load a GGUF model with llama.cpp: ``path``, else ``$SOPAGENT_MODEL``, else the embedded default.

    The constraint self-test runs unless ``self_test`` is False; a model whose constraint is not
    enforced is never returned.
    """
    from sopagent.models.embedded import embedded_model_path
    from sopagent.models.llamacpp import LlamaCppModel

    chosen = path or os.environ.get(MODEL_ENV) or str(embedded_model_path(progress))
    model = LlamaCppModel(chosen)
    if self_test:
        model.self_test()
    return model
