"""Shared fixtures: paths, a fresh SQLite store per test, and the real embedded model (loaded once)."""

from __future__ import annotations

from pathlib import Path

import pytest
from postgres import fresh_postgres_url, postgres_server, postgres_url  # noqa: F401  (shared fixtures, tests/postgres.py)

from sopagent import Store, load_policy

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ROOT / "policies"
CONVERSATIONS = ROOT / "tests" / "conversations"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """A fresh SQLite audit store in a temporary folder."""
    return Store(f"sqlite:///{tmp_path / 'audit.db'}")


@pytest.fixture
def card_policy():
    """The card services example policy."""
    return load_policy(POLICIES / "card_services.py")


@pytest.fixture
def retail_policy():
    """The retail orders example policy."""
    return load_policy(POLICIES / "retail_orders.py")


@pytest.fixture(scope="session")
def embedded_model():
    """The real embedded model through llama.cpp and Outlines (constraint self-test passed)."""
    from sopagent.models import load_model

    return load_model()
