"""Helpers for the server tests: a real uvicorn server on loopback (thread or subprocess), keys, facts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import httpx
import uvicorn
from postgres import free_port

from sopagent.server.app import create_app
from sopagent.server.config import ServeConfig
from sopagent.server.keys import create_key
from sopagent.server.service import Service

ROOT = Path(__file__).resolve().parent.parent
CARD = str(ROOT / "policies" / "card_services.py")
OK = "not_requested"
LOST = {"intent": "lost_or_stolen_card", "handoff": OK}
DISPUTE = {"intent": "dispute_payment", "handoff": OK}
ID_MARIA = {"card_last4": "4821", "date_of_birth": "1985-03-14", "handoff": OK}
LARGE_PAYMENT = {"payment_date": "2026-11-15", "amount": 899.0, "merchant": "Techland Store", "handoff": OK}


def say(facts: dict[str, Any], **extra: Any) -> str:
    """A customer message for the echo model: the facts it should read, as JSON."""
    return json.dumps({**facts, **extra})


@dataclass
class Live:
    """A running server: base URL, one customer and one operator key, and its Service."""

    url: str
    customer: str
    operator: str
    service: Service | None
    server: uvicorn.Server | None = None

    def client(self, key: str | None = None) -> httpx.Client:
        """An HTTP client with the customer key (or ``key``)."""
        return httpx.Client(base_url=self.url, timeout=30,
                            headers={"Authorization": f"Bearer {key or self.customer}"})

    def ops(self) -> httpx.Client:
        """An HTTP client with the operator key."""
        return self.client(self.operator)


def serve_in_thread(config: ServeConfig) -> Iterator[Live]:
    """Run create_app(config) under uvicorn in a thread on a free loopback port (a generator for fixtures)."""
    app = create_app(config)
    service: Service = app.state.service
    _, customer = create_key(service.store, "customer", "web-chat")
    _, operator = create_key(service.store, "operator", "ana")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield Live(f"http://127.0.0.1:{port}", customer, operator, service, server)
    finally:
        server.should_exit = True
        thread.join(10)
        service.model.shutdown()


def cli_key(db: str, scope: str) -> str:
    """Create a key with the real ``sopagent keys create`` command; return the printed secret."""
    out = subprocess.run([sys.executable, "-m", "sopagent.cli", "keys", "create", "--scope", scope, "--db", db],
                         check=True, capture_output=True, text=True)
    return out.stdout.strip()


class ServerProcess:
    """``sopagent serve`` as a subprocess (for SIGKILL and multi-worker tests)."""

    def __init__(self, db: str, *extra: str, model: str = "echo", start_timeout_s: float = 60) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sopagent.cli", "serve", CARD, "--db", db, "--model", model,
             "--port", str(self.port), "--log-level", "warning", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + start_timeout_s
        while True:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                out = self.proc.stdout.read().decode() if self.proc.stdout else ""
                raise RuntimeError(f"sopagent serve did not start: {out}")
            time.sleep(0.1)
        workers = int(extra[extra.index("--workers") + 1]) if "--workers" in extra else 1
        self.processes = self.wait_for_workers(workers, deadline)

    def wait_for_workers(self, workers: int, deadline: float) -> set[int]:
        """Wait until ``workers`` distinct processes have answered /readyz (fresh connection each time,
        so the kernel may route each to any worker's socket); returns their process ids."""
        seen: set[int] = set()
        while len(seen) < workers:
            try:
                answer = httpx.get(f"{self.url}/readyz", timeout=2)
                if answer.status_code == 200:
                    seen.add(answer.json()["process"])
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                out = self.proc.stdout.read().decode() if self.proc.stdout else ""
                raise RuntimeError(f"sopagent serve: only {len(seen)} of {workers} workers answered: {out}")
            time.sleep(0.05)
        return seen

    def kill(self) -> None:
        """SIGKILL the whole process group (workers included)."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        """Stop gracefully (SIGTERM), then kill."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


class WebhookReceiver:
    """A real HTTP server on loopback that records the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        received = self.events

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                length = int(self.headers.get("Content-Length", 0))
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, count: int, timeout_s: float = 10) -> list[dict[str, Any]]:
        """The events, once at least ``count`` arrived."""
        deadline = time.monotonic() + timeout_s
        while len(self.events) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.events

    def close(self) -> None:
        """Stop the receiver."""
        self.server.shutdown()
