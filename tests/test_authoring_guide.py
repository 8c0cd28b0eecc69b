"""docs/authoring.md: every code block runs, in order, in a fresh folder (so the guide cannot rot)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "authoring.md"
BLOCK = re.compile(r"```(bash|python)\n(.*?)```", re.S)


def test_every_block_of_the_authoring_guide_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = BLOCK.findall(GUIDE.read_text(encoding="utf-8"))
    assert sum(kind == "python" for kind, _ in blocks) >= 3 and sum(kind == "bash" for kind, _ in blocks) >= 2
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for number, (kind, code) in enumerate(blocks, start=1):
        if kind == "python":
            exec(compile(code, f"{GUIDE.name} block {number}", "exec"), namespace)  # noqa: S102
            continue
        for line in code.strip().splitlines():
            words = shlex.split(line.split("#", 1)[0])
            stdin = subprocess.DEVNULL if words[-2:] == ["<", "/dev/null"] else None
            words = words[:-2] if stdin is not None else words
            assert words[0] == "sopagent", line
            done = subprocess.run([sys.executable, "-m", "sopagent.cli", *words[1:]], stdin=stdin, text=True,
                                  capture_output=True, timeout=300, env={**os.environ, "SOPAGENT_DB": "sqlite:///guide.db"})
            assert done.returncode == 0, f"block {number}: {line}\n{done.stdout}\n{done.stderr}"
