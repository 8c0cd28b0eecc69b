"""Refuse a llama.cpp build that cannot run on this machine, with the command that rebuilds it.

``pip`` builds llama-cpp-python for the build machine's own CPU unless told otherwise. On a virtual
machine whose CPU reports Intel AMX but whose hypervisor does not give the guest AMX state, such a
build compiles llama.cpp's AMX kernels and the first prompt of more than one token kills the process
with a segmentation fault (a ``general protection fault ... in libggml-cpu.so``): no Python error,
no reply, nothing recorded. A crash cannot be caught in the process that crashes, so a build with
AMX kernels first decodes a short prompt in a child process; a child that dies of a signal means
this build cannot run here, and :class:`~sopagent.errors.ModelUnavailableError` names the rebuild.
A probe that passed is remembered per build (the library files' sizes and times) in the cache folder.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from sopagent.errors import ModelUnavailableError
from sopagent.models.embedded import cache_dir
from sopagent.models.llamacpp_flags import cmake_args, cpu_flags

PORTABLE_CMAKE_ARGS = cmake_args(cpu_flags())
"""llama.cpp built for this CPU's vector extensions but without AMX (:mod:`sopagent.models.llamacpp_flags`,
which the README's install commands run)."""
REBUILD_COMMAND = (f'CMAKE_ARGS="{PORTABLE_CMAKE_ARGS}" pip install --no-cache-dir --force-reinstall --no-deps '
                   "llama-cpp-python==0.3.36")
"""The command that replaces a build that cannot run here."""
PROBE_TIMEOUT_S = 300.0
"""How long the child process may take to load the model and decode one token."""
PROBE_SCRIPT = ("import sys\nfrom llama_cpp import Llama\n"
                "llama = Llama(model_path=sys.argv[1], n_ctx=256, n_threads=1, verbose=False)\n"
                "llama.create_completion('one two three four five six', max_tokens=1)\n")
"""What the child process runs: a prompt of several tokens, the call that crashes an unusable build."""

_checked: set[str] = set()
"""Builds already probed in this process."""


def compiled_features() -> str:
    """llama.cpp's own summary of the CPU features this build was compiled with."""
    import llama_cpp

    info = llama_cpp.llama_print_system_info()
    return info.decode(errors="replace") if isinstance(info, bytes) else str(info)


def has_amx_kernels(features: str) -> bool:
    """Whether a build, by its :func:`compiled_features`, runs Intel AMX kernels."""
    return any(f"{name} = 1" in features for name in ("AMX_INT8", "AMX_TILE", "AMX_BF16"))


def build_key() -> str:
    """A digest of the installed llama.cpp libraries (names, sizes, modification times)."""
    import llama_cpp

    library = Path(llama_cpp.__file__).parent / "lib"
    files = sorted(library.glob("*")) if library.is_dir() else []
    listing = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file()]
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:16]


def probe_command(model_path: Path) -> list[str]:
    """The child process that decodes a short prompt with this build."""
    return [sys.executable, "-c", PROBE_SCRIPT, str(model_path)]


def probe(command: Sequence[str], timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Run ``command``; raise :class:`ModelUnavailableError` with the rebuild command if it dies of a signal."""
    try:
        finished = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise ModelUnavailableError(f"llama.cpp did not decode a 6-token prompt within {timeout_s:.0f} s in a "
                                    "test process", fix="check the machine's load, or rebuild llama-cpp-python: "
                                    f"{REBUILD_COMMAND}") from exc
    if finished.returncode >= 0:
        return
    try:
        name = signal.Signals(-finished.returncode).name
    except ValueError:
        name = f"signal {-finished.returncode}"
    raise ModelUnavailableError(
        f"this llama-cpp-python build crashes on this machine ({name} while decoding a short prompt in a test "
        "process). It was compiled with Intel AMX kernels, which a virtual machine may advertise without "
        f"enabling.", fix=f"rebuild it without AMX kernels: {REBUILD_COMMAND}")


def ensure_runnable_build(model_path: Path, features: str | None = None,
                          command: Sequence[str] | None = None) -> None:
    """Refuse a llama.cpp build with AMX kernels that crashes here (see the module docstring).

    A build without AMX kernels is not probed. ``features`` and ``command`` replace the installed
    build's features and the probe's child process (tests).
    """
    features = compiled_features() if features is None else features
    if not has_amx_kernels(features):
        return
    key = build_key()
    marker = cache_dir() / f"llamacpp-build-{key}.ok"
    if key in _checked or marker.exists():
        return
    probe(command if command is not None else probe_command(model_path))
    _checked.add(key)
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(features.strip() + "\n", encoding="utf-8")
    except OSError:
        pass  # the probe runs again next time; nothing is lost
