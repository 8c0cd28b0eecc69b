"""The llama.cpp backend, constrained by Outlines.

Four things make it fast without weakening the constraint:

* the prompt prefix stays in llama.cpp's KV cache across calls (Outlines 1.3.3 resets the model
  after every call; we call llama.cpp ourselves with Outlines' processor and never reset), so a call
  evaluates only new tokens;
* the vocabulary is indexed once, and the compiled constraint is cached per output space (a
  choice among N options always uses the labels A..N, so there are at most 26 of them);
* options are single-token letters, so a choice is one prompt evaluation plus one decoded token,
  and the probability of every option is read from that one step's constrained distribution;
* a JSON answer's opening (``{"first_field":``), which every answer starts with, is evaluated with
  the prompt instead of decoded token by token, and decoding stops at the answer's closing brace
  instead of evaluating it to decode the end-of-text token (:class:`PrefilledProcessor`);
* the key after each value (``"next_field":``), which the schema fixes once a value has ended, is
  appended in one batch with the comma before it instead of decoded token by token (jump-forward
  decoding, :func:`next_key`), after the constraint's guide accepted it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
from pydantic import BaseModel

from sopagent.errors import ModelError, ModelUnavailableError
from sopagent.models.base import OPTION_LABELS, CallStats, ChatPrompt, facts_json_schema
from sopagent.models.llamacpp_build import ensure_runnable_build
from sopagent.models.local import MAX_FACTS_TOKENS, FactsAnswer, LocalConstrainedModel, field_probabilities

try:  # imported lazily by users who only need the scripted model
    import outlines
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    from outlines.backends.outlines_core import OutlinesCoreBackend
    from outlines.processors import OutlinesLogitsProcessor
    from outlines_core import Guide
except ImportError as exc:  # pragma: no cover - exercised only on broken installs
    raise ModelUnavailableError(
        f"the llama.cpp backend needs llama-cpp-python and outlines ({exc}).",
        fix="pip install -e . (builds llama-cpp-python from source, about 5 minutes)") from exc

FORCED = 0.9999
"""A decoded token whose constrained probability is at least this had no alternative (the constraint
allowed one token): JSON keys, quotes, the rest of an enum value once its first token is chosen."""

ANSWER_END = "}"
"""Where a flat JSON answer ends: decoding stops there (a brace inside a string value is caught by
parsing, and that answer is decoded again the ordinary way)."""


@dataclass(frozen=True)
class AnswerOpening:
    """The text every JSON answer of a facts schema starts with, and its tokens."""

    text: str
    token_ids: list[int]


class PrefilledProcessor(OutlinesLogitsProcessor):
    """An Outlines constraint whose first tokens were put at the end of the prompt.

    The constraint's guide is walked over them before the first decoded token, so the model may
    write after them exactly what the constraint allowed it to write after them before.
    """

    def __init__(self, inner: Any, opening_ids: list[int]) -> None:
        super().__init__("numpy")
        self.inner = inner
        self.opening_ids = list(opening_ids)
        self.primed = False

    def reset(self) -> None:
        self.inner.reset()
        self.primed = False

    def process_logits(self, input_ids: Any, logits: Any) -> Any:
        if not self.primed:
            # Outlines 1.3.3 builds its guides on the first step; we build them and walk them over
            # the opening but its last token, which the inner processor advances over itself (it
            # is the last token of the prompt it is given).
            self.inner._setup(self.tensor_adapter.shape(input_ids)[0], self.tensor_adapter.shape(logits)[1])
            self.inner.is_first_token = False
            for guide in self.inner._guides:
                for token in self.opening_ids[:-1]:
                    guide.advance(token_id=token, return_tokens=False)
            self.primed = True
        return self.inner.process_logits(input_ids, logits)


def next_key(answer: str, keys: list[str], last_token_text: str) -> str:
    """The rest of the next key of a flat JSON answer when its last token ended a value.

    ``answer`` is the text after the prefilled opening (``{"keys[0]":``); a comma outside a string in
    ``last_token_text`` ends value ``i`` and fixes ``"keys[i+1]":`` (with the space the model may have
    written after the comma). Returns what of it the model has not written yet, or ``""``.
    """
    in_string = escaped = False
    commas, last_comma = 0, -1
    for index, char in enumerate(answer):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == ",":
            commas, last_comma = commas + 1, index
    if last_comma < len(answer) - len(last_token_text) or commas >= len(keys):
        return ""
    tail = answer[last_comma + 1:]
    expected = (" " if tail.startswith(" ") else "") + json.dumps(keys[commas]) + ":"
    if tail == expected or not expected.startswith(tail):
        return ""
    return expected[len(tail):]


def _guides(processor: Any) -> list[Any]:
    """The Outlines guides inside a chain of wrapping processors (each wrapper keeps its ``inner``)."""
    while not hasattr(processor, "_guides"):
        processor = processor.inner
    return list(processor._guides)


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


class StepRecorder(OutlinesLogitsProcessor):
    """Wraps an Outlines processor and keeps, for every decoded step, the probability the constrained
    distribution gave the token greedy decoding takes (its most likely one)."""

    def __init__(self, inner: Any) -> None:
        super().__init__("numpy")
        self.inner = inner
        self.steps: list[tuple[int, float]] = []

    def reset(self) -> None:
        self.inner.reset()
        self.steps = []

    def process_logits(self, input_ids: Any, logits: Any) -> Any:
        out = self.inner.process_logits(input_ids, logits)
        row = np.asarray(out[0], dtype=np.float64)
        best = int(np.argmax(row))
        finite = row[np.isfinite(row)]
        total = np.exp(finite - row[best]).sum() if finite.size else 0.0
        self.steps.append((best, float(1.0 / total) if total > 0 else 0.0))
        return out


class LlamaCppModel(LocalConstrainedModel):
    """Constrained extraction and choice on a local GGUF model through llama.cpp and Outlines."""

    constraint_install_fix = "pip install numba (Outlines needs it to apply constraints under llama.cpp)"
    constraint_apply_fix = "pip install numba outlines==1.3.3 and check that nothing replaces the logits processor"

    def __init__(self, model_path: str | Path, *, n_ctx: int = 4096, n_threads: int | None = None,
                 seed: int = 0, prefill_json: bool = True, jump_forward: bool = True) -> None:
        """Load ``model_path`` (a GGUF file). ``prefill_json`` off decodes every token of a JSON
        answer, ``jump_forward`` off decodes the keys after the opening (each only to measure what it
        saves)."""
        path = Path(model_path)
        if not path.is_file():
            raise ModelUnavailableError(f"model file not found: {path}", fix="pass --model PATH.gguf or "
                                        "unset SOPAGENT_MODEL to use the embedded model")
        ensure_runnable_build(path)  # a build that would crash here is refused with its fix
        threads = n_threads or max(1, (os.cpu_count() or 2))
        try:
            llama = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                          seed=seed, verbose=False)
        except (ValueError, RuntimeError) as exc:
            raise ModelUnavailableError(f"llama.cpp could not load {path}: {exc}",
                                        fix="check that the file is a GGUF model") from exc
        self.llama = llama
        self.name = f"llamacpp:{path.name}"
        self._settings: dict[str, Any] = {"model_path": path, "n_ctx": n_ctx, "n_threads": threads, "seed": seed,
                          "prefill_json": prefill_json, "jump_forward": jump_forward}
        self.prefill_json = prefill_json
        self.jump_forward = jump_forward
        self._openings: dict[type[BaseModel], AnswerOpening | None] = {}
        self._reading_lane: LlamaCppModel | None = None
        # Outlines' own constructor builds the tokenizer view its constraints are indexed on.
        self.outlines_model = outlines.from_llamacpp(llama, chat_mode=False)
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
        return self._formatter(messages=cast(Any, prompt.messages())).prompt

    def _run(self, text: str, processor: Any, max_tokens: int) -> tuple[str, CallStats]:
        out, stats, _ = self._generate(self._prompt_tokens(text), processor, max_tokens)
        return out, stats

    def _prompt_tokens(self, text: str) -> list[int]:
        """A rendered prompt's tokens, with the BOS token where the model's vocabulary asks for one."""
        return self.llama.tokenize(text.encode(), add_bos=True, special=True)

    def _cached_prefix(self, tokens: list[int]) -> int:
        """How many of ``tokens``, from the start, llama.cpp's KV cache holds already."""
        reused = 0
        for cached, new in zip(self.llama.input_ids[: self.llama.n_tokens], tokens):
            if cached != new:
                break
            reused += 1
        return reused

    def _generate(self, tokens: list[int], processor: Any, max_tokens: int,
                  stop: list[str] | None = None) -> tuple[str, CallStats, str | None]:
        """Greedy generation after ``tokens`` under ``processor``; llama.cpp re-uses the longest
        prefix they share with its KV cache. Returns the text, its cost and why it finished."""
        reused = self._cached_prefix(tokens)
        started = time.perf_counter()
        try:
            # Outlines' own adapter turns the processor into llama.cpp's argument, as in its generate()
            constraint = self.outlines_model.type_adapter.format_output_type(processor)
            completion: Any = self.llama(cast(Any, tokens), logits_processor=constraint,
                                    max_tokens=max_tokens, stop=stop or [], temperature=0.0, top_k=1, top_p=1.0,
                                    min_p=0.0, repeat_penalty=1.0)
        except Exception as exc:  # llama.cpp and Outlines raise many types; normalise them
            raise ModelError(f"llama.cpp generation failed: {type(exc).__name__}: {exc}",
                             retryable=False) from exc
        choice = completion["choices"][0]
        stats = CallStats(ms=(time.perf_counter() - started) * 1000, prompt_tokens=len(tokens), reused_tokens=reused,
                          generated_tokens=int(completion["usage"]["completion_tokens"]))
        return choice["text"], stats, choice["finish_reason"]

    def _greedy_sampler(self, constraint: Any) -> Any:
        """A greedy llama.cpp sampler that applies ``constraint``, of this call's own (``Llama.sample()``
        would reuse the sampler the last ``generate()`` left, with that call's constraint)."""
        return self.llama._init_sampler(temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0,
                                        logits_processor=constraint)

    def _decode_jumping(self, tokens: list[int], processor: StepRecorder, max_tokens: int,
                        keys: list[str]) -> tuple[str, CallStats, str]:
        """Greedy decoding of a flat JSON answer after ``tokens`` (which end with its opening) under
        ``processor``, up to its closing brace, with each key after a value appended in one batch
        (:func:`next_key`) where the constraint's guide accepts it. The prefix shared with llama.cpp's
        KV cache is reused. Returns the text, its cost and why it finished (``stop`` at the brace)."""
        llama = self.llama
        reused = self._cached_prefix(tokens)
        reused = min(reused, len(tokens) - 1)  # the last prompt token is evaluated for its logits
        started = time.perf_counter()
        constraint = self.outlines_model.type_adapter.format_output_type(processor)
        out: list[int] = []
        pending, jumped, decoded, finish = tokens[reused:], 0, 0, "length"
        llama.n_tokens = reused
        try:
            sampler = self._greedy_sampler(constraint)
            while decoded < max_tokens:
                llama.eval(pending)
                token = sampler.sample(llama._ctx, -1)
                decoded += 1
                if token == llama.token_eos():
                    finish = "stop"
                    break
                out.append(token)
                answer = llama.detokenize(out).decode("utf-8", errors="ignore")
                if ANSWER_END in answer:
                    finish = "stop"
                    break
                pending = [token]
                rest = next_key(answer, keys, llama.detokenize([token]).decode("utf-8", errors="ignore")) \
                    if self.jump_forward else ""
                forced = llama.tokenize(rest.encode(), add_bos=False, special=False) if rest else []
                guides = _guides(processor) if forced else []  # set up by the processor's first call
                if forced and all(guide.accepts_tokens([token, *forced]) for guide in guides):
                    for guide in guides:  # the processor advances over the last one itself
                        for skipped in [token, *forced[:-1]]:
                            guide.advance(token_id=skipped, return_tokens=False)
                    processor.steps.extend((forced_token, 1.0) for forced_token in forced)
                    out.extend(forced)
                    pending.extend(forced)
                    jumped += len(forced)
        except Exception as exc:  # llama.cpp and Outlines raise many types; normalise them
            raise ModelError(f"llama.cpp generation failed: {type(exc).__name__}: {exc}",
                             retryable=False) from exc
        text = llama.detokenize(out).decode("utf-8", errors="replace")
        if finish == "stop":
            text = text.split(ANSWER_END, 1)[0]
        stats = CallStats(ms=(time.perf_counter() - started) * 1000, prompt_tokens=len(tokens), reused_tokens=reused,
                          generated_tokens=decoded, jumped_tokens=jumped)
        return text, stats, finish

    def _run_facts(self, text: str, processor: Any, schema: type[BaseModel]) -> FactsAnswer:
        """The JSON answer with its opening prefilled and decoding stopped at its closing brace, and
        each field value's probability (:func:`field_probabilities`).

        Falls back to decoding every token when the schema is not flat, the opening is not what the
        constraint starts with, or a brace inside a string value ended the answer early.
        """
        opening = self._opening(schema, processor) if self.prefill_json else None
        if opening is not None:
            recorder = StepRecorder(PrefilledProcessor(processor, opening.token_ids))
            recorder.reset()
            tokens = self._prompt_tokens(text) + opening.token_ids
            keys = list(facts_json_schema(schema)["properties"])
            out, stats, finish = self._decode_jumping(tokens, recorder, MAX_FACTS_TOKENS, keys)
            raw = opening.text + out + (ANSWER_END if finish == "stop" else "")
            try:
                json.loads(raw)
            except ValueError:
                cut_short_ms = stats.ms
            else:
                steps = [(token, 1.0) for token in opening.token_ids] + recorder.steps
                # jumped tokens are recorded at 1.0 but were not decoded
                stats.forced_tokens = sum(p >= FORCED for _, p in recorder.steps) - stats.jumped_tokens
                return FactsAnswer(raw, stats, field_probabilities(raw, self._token_texts(steps)))
        else:
            cut_short_ms = 0.0
        recorder = StepRecorder(processor)
        recorder.reset()
        raw, stats = self._run(text, recorder, MAX_FACTS_TOKENS)
        stats.ms += cut_short_ms  # an answer cut short counts too
        stats.forced_tokens = sum(probability >= FORCED for _, probability in recorder.steps)
        return FactsAnswer(raw, stats, field_probabilities(raw, self._token_texts(recorder.steps)))

    def _token_texts(self, steps: list[tuple[int, float]]) -> list[tuple[bytes, float]]:
        return [(self.llama.detokenize([token]), probability) for token, probability in steps]

    def _opening(self, schema: type[BaseModel], processor: Any) -> AnswerOpening | None:
        """``{"first_field":`` for a flat facts schema whose constraint accepts it (cached per schema)."""
        if schema not in self._openings:
            document = facts_json_schema(schema)
            properties = document.get("properties", {})
            nested = any(marker in json.dumps(properties) for marker in ('"$ref"', '"object"', '"properties"'))
            opening = None
            if properties and not nested and "$defs" not in document:
                text = '{"' + next(iter(properties)) + '":'
                ids = self.llama.tokenize(text.encode(), add_bos=False, special=False)
                if Guide(processor.index).accepts_tokens(ids):
                    opening = AnswerOpening(text, ids)
            self._openings[schema] = opening
        return self._openings[schema]

    def prefetch(self, prompt: ChatPrompt, upto: str) -> CallStats:
        """Evaluate ``prompt`` as rendered up to the last ``upto`` into the KV cache (nothing decoded), so
        that a later prompt that starts the same evaluates only what follows: the next turn's prompt,
        evaluated while the customer types. Returns what it evaluated."""
        text = self.render(prompt)
        cut = text.rfind(upto)
        if cut <= 0:
            return CallStats()
        tokens = self._prompt_tokens(text[:cut])
        llama = self.llama
        reused = self._cached_prefix(tokens)
        started = time.perf_counter()
        llama.n_tokens = reused
        try:
            llama.eval(tokens[reused:])
        except Exception as exc:  # llama.cpp raises many types; normalise them
            raise ModelError(f"llama.cpp evaluation failed: {type(exc).__name__}: {exc}", retryable=True) from exc
        return CallStats(ms=(time.perf_counter() - started) * 1000, prompt_tokens=len(tokens), reused_tokens=reused)

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
