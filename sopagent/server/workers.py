"""``sopagent serve --workers N``: N processes, each with its own listening socket on one port.

Uvicorn's own ``--workers`` shares one listening socket between the processes. Whichever process
wakes first accepts every connection waiting at that moment, and keep-alive connections stay with
the process that accepted them: measured with 4 keep-alive clients and 2 workers, one process served
every turn while the other's model sat idle. Here each worker binds its own socket with
``SO_REUSEPORT`` and the kernel spreads new connections over the sockets by their address hash, so
each process's model gets its share. Where ``SO_REUSEPORT`` does not exist (Windows), uvicorn's
shared socket is used.

The parent process starts the workers, restarts one that dies after it started serving, and stops
them all on SIGINT/SIGTERM or when a worker cannot start (a bad policy, a port in use).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from multiprocessing.process import BaseProcess
from typing import Any

from sopagent.server.config import CONFIG_ENV

log = logging.getLogger("sopagent.server")
STARTUP_FAILURE = 3
"""Exit code of a worker that could not start serving (uvicorn's convention)."""


def reuse_port_supported() -> bool:
    """Whether this platform lets several sockets listen on one port (``SO_REUSEPORT``)."""
    return hasattr(socket, "SO_REUSEPORT")


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` that other workers' sockets may share (SO_REUSEPORT)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def _worker(config_json: str, host: str, port: int, log_level: str, served: Any) -> None:
    """One worker process: its own socket on the shared port, one uvicorn server, one model.

    ``served`` (a shared flag) is set once the server accepts connections, so that the parent can
    tell a worker that never started (restarting it would fail the same way) from one that died.
    """
    import threading

    import uvicorn

    from sopagent.errors import SopAgentError
    from sopagent.server.app import create_app
    from sopagent.server.config import ServeConfig
    from sopagent.server.protocol import protocol_with

    os.environ[CONFIG_ENV] = config_json
    try:
        app = create_app(ServeConfig.from_env())  # policies, store and model: the slow part
        sock = listening_socket(host, port)
    except SopAgentError as exc:
        print(f"sopagent serve: worker {os.getpid()}: {exc}", file=sys.stderr, flush=True)
        sys.exit(STARTUP_FAILURE)
    except OSError as exc:
        print(f"sopagent serve: cannot listen on {host}:{port}: {exc}\n  fix: choose a free --port",
              file=sys.stderr, flush=True)
        sys.exit(STARTUP_FAILURE)
    settings = app.state.service.config
    config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5,
                            limit_concurrency=settings.connection_cap(), http=protocol_with(settings.header_timeout_s))
    server = uvicorn.Server(config)

    def report_started() -> None:
        while not server.started and not server.should_exit:
            time.sleep(0.05)
        served.value = int(server.started)

    threading.Thread(target=report_started, daemon=True).start()
    server.run(sockets=[sock])
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def run_workers(config_json: str, host: str, port: int, workers: int, log_level: str) -> int:
    """Run ``workers`` processes on ``host:port`` until a signal; returns the exit status."""
    context = multiprocessing.get_context("spawn")
    stopping = False

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}

    def start() -> tuple[BaseProcess, Any]:
        served = context.Value("i", 0)
        process = context.Process(target=_worker, args=(config_json, host, port, log_level, served))
        process.start()
        return process, served

    started = [start() for _ in range(workers)]
    status = 0
    try:
        while not stopping:
            time.sleep(0.2)
            for index, (process, served) in enumerate(started):
                if stopping:  # a Ctrl+C reaches the workers too; they exit as they should
                    break
                if process.is_alive():
                    continue
                if process.exitcode == STARTUP_FAILURE or not served.value:
                    print(f"sopagent serve: worker {process.pid} could not start; stopping (see its error above)",
                          file=sys.stderr, flush=True)
                    status, stopping = 1, True
                    break
                log.warning("worker %s exited with %s; starting a new one", process.pid, process.exitcode)
                started[index] = start()
    finally:
        processes = [process for process, _ in started]
        for process in processes:
            if process.is_alive():
                process.terminate()  # uvicorn finishes the requests in flight (graceful timeout 5 s)
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status
