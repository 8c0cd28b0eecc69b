"""What one ``sopagent serve`` process needs to know; passed to worker processes as JSON."""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field

from sopagent.settings import Settings

CONFIG_ENV = "SOPAGENT_SERVE_CONFIG"
ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?")


@dataclass
class ServeConfig:
    """Settings of the HTTP service (the ``sopagent serve`` options)."""

    policies: list[str]
    """Policy files served; a conversation names one by its policy name."""
    db: str | None = None
    """Audit store URL (SQLite for one process, PostgreSQL for several)."""
    model: str | None = None
    """A model spec (``echo`` / ``echo:DELAY_S`` the test model), or None for the embedded model."""
    config_file: str | None = None
    """The config file the parent read (``--config`` or ``./sopagent.toml``); each worker reads it too."""
    model_threads: int | None = None
    """CPU threads of an in-process llama.cpp model in each worker (None: all cores)."""
    model_timeout_s: float = 30.0
    """A model call slower than this gives the fallback reply and an escalated decision."""
    turns_in_flight: int = 4
    """Turns of one process past admission at once (each holds a lock connection and a model queue place)."""
    turn_wait_s: float = 600.0
    """How long a turn may wait for admission before a 503 (nothing recorded, nothing sent)."""
    webhook_url: str | None = None
    """Escalations are POSTed here as JSON (best effort, after the decision is committed)."""
    max_message_chars: int = 4000
    """Longest customer message accepted."""
    max_body_bytes: int = 65536
    """Largest request body accepted (413 above)."""
    long_poll_max_s: float = 60.0
    """Longest ``wait`` a client may ask of the delivery long-poll."""
    rate_limit: str = "6000/minute"
    """Requests one key may send (a web chat's key carries all its customers' requests), then 429."""
    failed_auth_limit: str = "60/minute"
    """Requests with a missing or wrong key one client address may send, then 429 for every request."""
    long_polls_per_key: int = 200
    """Long-polls one key may hold open at once, then 429."""
    max_connections: int | None = None
    """Connections and requests the server handles at once per worker; more are answered 503 at once.
    None: the process's open-file limit less a reserve for its database and model (:meth:`connection_cap`)."""
    header_timeout_s: float = 10.0
    """Seconds a client may take to send a request's headers before its connection is closed."""
    anchor_key: str | None = None
    """Ed25519 signing key (``sopagent audit keygen``) for checkpoints written while serving."""
    checkpoint_dir: str | None = None
    """Where checkpoints go (keep it on write-once storage); with ``anchor_key``."""
    checkpoint_every: int = 1000
    """A checkpoint is written once the chain has grown by this many records since the last."""
    confidence: float | None = None
    """Model choices below this probability wait for an operator (default: the policy's)."""
    chat_origins: list[str] = field(default_factory=list)
    """Sites (``https://host[:port]``) whose pages may embed the web chat; none: it opens only on its own."""
    extra: dict[str, str] = field(default_factory=dict)

    def frame_ancestors(self) -> str:
        """The Content-Security-Policy ``frame-ancestors`` value of the chat page; a ``ValueError`` naming
        the origin that is not one."""
        for origin in self.chat_origins:
            if not ORIGIN.fullmatch(origin):
                raise ValueError(f"--chat-origin {origin!r} is not an origin; write scheme://host[:port] with no "
                                 "path, e.g. https://www.bank.example")
        return " ".join(["'self'", *self.chat_origins])

    def connection_cap(self) -> int:
        """The connection cap in force: ``max_connections``, or the open-file limit less 256 descriptors
        kept for the database, the model and logs (at least 64)."""
        if self.max_connections is not None:
            return self.max_connections
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        return max(64, soft - 256) if soft != resource.RLIM_INFINITY else 65536

    def settings(self) -> Settings:
        """The settings each worker builds its store, model and agents from (:mod:`sopagent.compose`)."""
        return Settings.load(self.config_file, model=self.model, db=self.db,
                             agent={"confidence_threshold": self.confidence})

    def to_env(self) -> str:
        """JSON for :data:`CONFIG_ENV`."""
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> "ServeConfig":
        """Read the configuration a ``sopagent serve`` parent left in the environment."""
        raw = os.environ.get(CONFIG_ENV)
        if not raw:
            raise RuntimeError(f"${CONFIG_ENV} is not set; start the service with `sopagent serve POLICY...`")
        return cls(**json.loads(raw))
