"""Sensitive numbers masked at the edge, before a customer's message is stored, shown or read.

Customers type full card numbers into chat even when asked for four digits. PCI DSS forbids storing
a full card number unprotected, so the engine masks the message first thing in a turn: the audit
log, the console, exports, webhooks and every model (remote or embedded) see only the masked text.

* card numbers: 13 to 19 digits, spaces or dashes between them allowed, that pass the Luhn check
  (python-stdnum): ``•••• •••• •••• 4821`` (the last four digits stay: procedures ask for them);
* IBANs whose checksum is valid (python-stdnum): ``DE•• •••• •••• •••• 3000`` (country and last four);
* a policy's own patterns (``Policy(sensitive=[r"..."])``): each match becomes ``•••``.

A number that fails its checksum is left as written (an order number is not a card).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from stdnum import iban, luhn

MASK = "•"
CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b", re.IGNORECASE)


def mask_card(number: str) -> str:
    """``•••• •••• •••• 4821`` for a card number."""
    digits = re.sub(r"\D", "", number)
    return f"{MASK * 4} {MASK * 4} {MASK * 4} {digits[-4:]}"


def mask_iban(number: str) -> str:
    """``DE•• •••• •••• •••• 3000`` for an IBAN: its country and last four characters."""
    compact = re.sub(r"\s", "", number).upper()
    hidden = len(compact) - 6
    groups = [MASK * 4] * (hidden // 4) + ([MASK * (hidden % 4)] if hidden % 4 else [])
    return " ".join([compact[:2] + MASK * 2, *groups, compact[-4:]])


def mask_sensitive(text: str, patterns: Sequence[str | re.Pattern[str]] = ()) -> str:
    """``text`` with every valid card number, valid IBAN and match of ``patterns`` masked."""
    def card(match: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", match.group())
        return mask_card(digits) if luhn.is_valid(digits) else match.group()

    def account(match: re.Match[str]) -> str:
        found = match.group()
        for end in range(len(found), 14, -1):  # the longest valid IBAN the match starts with
            if found[end - 1] != " " and iban.is_valid(found[:end]):
                return mask_iban(found[:end]) + found[end:]
        return found

    masked = IBAN.sub(account, text)
    masked = CARD.sub(card, masked)
    for pattern in patterns:
        masked = re.sub(pattern, MASK * 3, masked)
    return masked
