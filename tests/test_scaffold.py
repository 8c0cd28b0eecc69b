"""``sopagent new``: a generated policy passes check and its tests as made."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from sopagent.check import check_policy_file
from sopagent.convtest import run_test_files
from sopagent.errors import AuthoringError
from sopagent.scaffold import create_policy


def _new(tmp_path: Path, name: str = "member_services") -> list[Path]:
    made = subprocess.run([sys.executable, "-m", "sopagent.cli", "new", name, "--dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    return [Path(line.removeprefix("created ")) for line in made.stdout.splitlines() if line.startswith("created ")]


def test_a_new_policy_passes_check_and_its_tests_without_a_model(tmp_path: Path) -> None:
    written = _new(tmp_path)
    policy, tests = written[0], written[-1]
    assert policy.name == "member_services.py" and all(path.is_file() for path in written)
    assert check_policy_file(str(policy)) == []
    result = subprocess.run([sys.executable, "-m", "sopagent.cli", "test", str(tests), "--model", "echo"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "3 of 3 conversation tests passed; 0 unsafe actions" in result.stdout, \
        result.stdout + result.stderr


def test_new_refuses_a_bad_name_and_never_overwrites(tmp_path: Path) -> None:
    with pytest.raises(AuthoringError, match="not a policy name"):
        create_policy("Member-Services", tmp_path)
    create_policy("claims", tmp_path)
    with pytest.raises(AuthoringError, match="exist already"):
        create_policy("claims", tmp_path)


@pytest.mark.model
def test_a_new_policy_passes_its_tests_on_the_embedded_model(tmp_path: Path, embedded_model) -> None:
    tests = _new(tmp_path, "member_desk")[-1]
    out = io.StringIO()
    assert run_test_files([str(tests)], model=embedded_model, out=out) == 0, out.getvalue()
