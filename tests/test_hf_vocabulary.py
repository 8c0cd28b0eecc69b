"""The transformers backend's constraint vocabulary on the small Gemma tokenizer (no model weights)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.model


def test_gemma_tokens_can_write_a_single_space_inside_a_literal() -> None:
    pytest.importorskip("transformers", reason="pip install torch==2.13.0 && pip install 'sopagent[transformers]'")
    from outlines.backends.outlines_core import OutlinesCoreBackend
    from outlines_core import Index
    from transformers import AutoTokenizer

    from sopagent.models.hf import TransformersModel, gemma_gguf_path

    path = gemma_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name, local_files_only=True)
    holder = type("Holder", (), {"tokenizer": tokenizer})()

    def text(token: str) -> str:
        return TransformersModel._token_text(holder, token)  # type: ignore[arg-type]

    assert text("\u2581late") == " late" and text("late") == "late"
    vocabulary = OutlinesCoreBackend.create_outlines_core_vocabulary(
        tokenizer.get_vocab(), tokenizer.eos_token_id, tokenizer.eos_token, text)
    Index(r'\{"fee_type":("late payment"|null)\}', vocabulary)  # raised "no transitions" before the fix
