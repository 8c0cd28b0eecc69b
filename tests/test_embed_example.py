"""The README's embedding example runs as a script and its decisions are in the audit store."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sopagent import Store

ROOT = Path(__file__).resolve().parent.parent


def test_embed_example_runs(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'audit.db'}"
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "embed.py"), "--echo", "--db", db],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    decisions = Store(db).decisions()
    assert [d.response_id for d in decisions] == ["ask_identity", "confirm_block"]
    for decision in decisions:
        assert f"agent>    {decision.sent_text}" in out.stdout
    assert "chain verified: 2 records intact" in out.stdout
