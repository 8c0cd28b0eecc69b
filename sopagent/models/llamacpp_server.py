"""Start llama-cpp-python's OpenAI-compatible server as a subprocess on loopback.

Used by the contract tests and the backend benchmark to talk to a real server over HTTP, and
handy for trying the ``openai-compatible:`` backend without a GPU::

    with llamacpp_server(path) as base_url:
        model = load_model(f"openai-compatible:{base_url}?format=json_object#{SERVER_MODEL_ALIAS}")

It needs the server extra: ``pip install 'llama-cpp-python[server]'`` (``sopagent[server-test]``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sopagent.errors import ModelUnavailableError

SERVER_MODEL_ALIAS = "local"
"""The model name the server answers to (``--model_alias``)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def llamacpp_server(model_path: str | Path, *, n_ctx: int = 4096, n_threads: int | None = None,
                    start_timeout_s: float = 180.0) -> Iterator[str]:
    """Run ``python -m llama_cpp.server`` on a free loopback port; yield its ``/v1`` base URL."""
    try:
        import llama_cpp.server  # noqa: F401
    except ImportError as exc:
        raise ModelUnavailableError(f"llama-cpp-python's server is not installed ({exc}).",
                                    fix="pip install 'llama-cpp-python[server]'") from exc
    port = free_port()
    threads = n_threads or max(1, os.cpu_count() or 2)
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(model_path), "--host", "127.0.0.1",
               "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", str(threads),
               "--n_threads_batch", str(threads), "--model_alias", SERVER_MODEL_ALIAS, "--verbose", "false"]
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            if process.poll() is not None:
                log.seek(0)
                raise ModelUnavailableError(f"the llama.cpp server exited with {process.returncode}:\n"
                                            f"{log.read().decode(errors='replace')[-2000:]}")
            try:
                with urllib.request.urlopen(f"{base_url}/models", timeout=2.0) as answer:
                    if answer.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise ModelUnavailableError(f"the llama.cpp server did not answer within {start_timeout_s:.0f} s")
            time.sleep(0.5)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
