"""The llama.cpp backend, constrained by Outlines.

Three things make it fast without weakening the constraint:

* the prompt prefix stays in llama.cpp's KV cache across calls (Outlines 1.3.3 resets the model
  after every call; :class:`PrefixCachingLlamaCpp` does not), so a call evaluates only new tokens;
* the vocabulary is indexed once, and the compiled constraint is cached per output space (a
  choice among N options always uses the labels A..N, so there are at most 26 of them);
* options are single-token letters, so a choice is one prompt evaluation plus one decoded token,
  and the probability of every option is read from that one step's constrained distribution.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from sopagent.errors import ModelError, ModelUnavailableError
from sopagent.models.base import OPTION_LABELS, CallStats, ChatPrompt
from sopagent.models.local import LocalConstrainedModel

try:  # imported lazily by users who only need the scripted model
    import outlines
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    from outlines.backends.outlines_core import OutlinesCoreBackend
    from outlines.models.llamacpp import LlamaCpp
    from outlines.processors import OutlinesLogitsProcessor
except ImportError as exc:  # pragma: no cover - exercised only on broken installs
    raise ModelUnavailableError(
        f"the llama.cpp backend needs llama-cpp-python and outlines ({exc}).\n"
        "  fix: pip install -e . (builds llama-cpp-python from source, about 5 minutes)") from exc

class PrefixCachingLlamaCpp(LlamaCpp):
    """Outlines' llama.cpp model without the reset after each call.

    llama-cpp-python already re-uses the longest common token prefix of the KV cache; Outlines
    1.3.3 defeats that by calling ``reset()`` after every generation.
    """

    def generate(self, model_input: Any, output_type: Any = None, **inference_kwargs: Any) -> str:
        if not isinstance(model_input, str):
            raise TypeError("PrefixCachingLlamaCpp takes a rendered prompt string")
        completion = self.model(
            model_input,
            logits_processor=self.type_adapter.format_output_type(output_type),
            **inference_kwargs,
        )
        return completion["choices"][0]["text"]


class ProbabilityRecorder(OutlinesLogitsProcessor):
    """Wraps an Outlines processor and keeps the constrained distribution of the first step."""

    def __init__(self, inner: OutlinesLogitsProcessor, token_ids: list[int]) -> None:
        super().__init__("numpy")
        self.inner = inner
        self.token_ids = np.asarray(token_ids)
        self.first: np.ndarray | None = None

    def reset(self) -> None:
        self.inner.reset()
        self.first = None

    def process_logits(self, input_ids: Any, logits: Any) -> Any:
        out = self.inner.process_logits(input_ids, logits)
        if self.first is None:
            row = np.asarray(out[0], dtype=np.float64)
            finite = np.isfinite(row)
            probs = np.zeros_like(row)
            if finite.any():
                shifted = np.exp(row[finite] - row[finite].max())
                probs[finite] = shifted / shifted.sum()
            self.first = probs[self.token_ids]
        return out


class LlamaCppModel(LocalConstrainedModel):
    """Constrained extraction and choice on a local GGUF model through llama.cpp and Outlines."""

    constraint_install_fix = "pip install numba (Outlines needs it to apply constraints under llama.cpp)"
    constraint_apply_fix = "pip install numba outlines==1.3.3 and check that nothing replaces the logits processor"

    def __init__(self, model_path: str | Path, *, n_ctx: int = 4096, n_threads: int | None = None,
                 seed: int = 0) -> None:
        path = Path(model_path)
        if not path.is_file():
            raise ModelUnavailableError(f"model file not found: {path}\n  fix: pass --model PATH.gguf or "
                                        "unset SOPAGENT_MODEL to use the embedded model")
        threads = n_threads or max(1, (os.cpu_count() or 2))
        try:
            llama = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                          seed=seed, verbose=False)
        except (ValueError, RuntimeError) as exc:
            raise ModelUnavailableError(f"llama.cpp could not load {path}: {exc}\n"
                                        "  fix: check that the file is a GGUF model") from exc
        self.llama = llama
        self.name = f"llamacpp:{path.name}"
        self._settings = {"model_path": path, "n_ctx": n_ctx, "n_threads": threads, "seed": seed}
        self._reading_lane: LlamaCppModel | None = None
        # Outlines' own constructor builds the tokenizer view; we only swap in the subclass that
        # keeps the KV cache between calls.
        self.outlines_model = outlines.from_llamacpp(llama, chat_mode=False)
        self.outlines_model.__class__ = PrefixCachingLlamaCpp
        self._backend = OutlinesCoreBackend(self.outlines_model)
        self._processors: dict[str, OutlinesLogitsProcessor] = {}
        template = llama.metadata.get("tokenizer.chat_template")
        if not template:
            raise ModelUnavailableError(f"{path.name} has no chat template; use an instruction-tuned GGUF")
        eos = llama._model.token_get_text(llama.token_eos())
        self._formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token="")
        self.label_token_ids = [self._single_token(label) for label in OPTION_LABELS]

    # --- constraints --------------------------------------------------------------------------

    def _single_token(self, text: str) -> int:
        ids = self.llama.tokenize(text.encode(), add_bos=False, special=False)
        if len(ids) != 1:
            raise ModelUnavailableError(f"option label {text!r} is not one token in this model's vocabulary")
        return ids[0]

    # --- calls ----------------------------------------------------------------------------------

    def render(self, prompt: ChatPrompt) -> str:
        """Apply the model's own chat template."""
        return self._formatter(messages=prompt.messages()).prompt

    def _run(self, text: str, processor: Any, max_tokens: int) -> tuple[str, CallStats]:
        tokens = self.llama.tokenize(text.encode(), add_bos=False, special=True)
        reused = 0
        for cached, new in zip(self.llama.input_ids[: self.llama.n_tokens], tokens):
            if cached != new:
                break
            reused += 1
        started = time.perf_counter()
        try:
            out = self.outlines_model.generate(text, processor, max_tokens=max_tokens, temperature=0.0,
                                               top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0)
        except Exception as exc:  # llama.cpp and Outlines raise many types; normalise them
            raise ModelError(f"llama.cpp generation failed: {type(exc).__name__}: {exc}",
                             retryable=False) from exc
        stats = CallStats(ms=(time.perf_counter() - started) * 1000, prompt_tokens=len(tokens),
                          reused_tokens=reused,
                          generated_tokens=len(self.llama.tokenize(out.encode(), add_bos=False)) if out else 0)
        return out, stats

    def _recorder(self, inner: Any, token_ids: list[int]) -> "ProbabilityRecorder":
        return ProbabilityRecorder(inner, token_ids)

    def reading_lane(self) -> "LlamaCppModel":
        """A second llama.cpp context on the same weights (memory-mapped, so shared), made once.

        llama.cpp keeps one prompt prefix in its KV cache. Follow-up readings (``Turn.read``) have
        their own system text; on this context they keep their prefix cached instead of evicting
        the step's reading's (which then cost the whole prompt again: 4-8 s a STAR case on 2 cores).
        """
        if self._reading_lane is None:
            settings = dict(self._settings)
            lane = LlamaCppModel(settings.pop("model_path"), **settings)
            lane.name = self.name
            lane.self_test()  # its constraints are checked like the first context's
            self._reading_lane = lane
        return self._reading_lane

    def generate_free(self, prompt: ChatPrompt, max_tokens: int) -> tuple[str, CallStats]:
        """UNCONSTRAINED generation, for baselines that measure what constraints prevent.

        Never used on a path whose text can reach a customer.
        """
        return self._run(self.render(prompt), None, max_tokens)
