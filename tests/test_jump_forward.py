"""The key a flat JSON answer must write after a value (jump-forward decoding), read from the text."""

from __future__ import annotations

import pytest

from sopagent.models.llamacpp import next_key

KEYS = ["card_last4", "date_of_birth", "handoff"]


@pytest.mark.parametrize("answer, last, expected", [
    (' "4821",', '",', '"date_of_birth":'),
    (' "4821", ', ', ', '"date_of_birth":'),  # a space the model wrote after the comma is kept
    (' "4821","', '","', 'date_of_birth":'),  # a token that holds the comma and the quote
    (' "4821", "date', ' "date', ""),  # the comma came in an earlier token: nothing is appended now
    (' "4821","date_of_birth":', '":', ""),
    (' "48,21"', '21"', ""),  # a comma inside a string value ends nothing
    (' "a\\",b",', '",', '"date_of_birth":'),  # an escaped quote does not end the string
    (' null, "1985-03-14",', '",', '"handoff":'),
    (' null, null, "not_requested",', '",', ""),  # no key after the last one
    (' "4821",x', 'x', ""),
])
def test_next_key(answer: str, last: str, expected: str) -> None:
    assert next_key(answer, KEYS, last) == expected
