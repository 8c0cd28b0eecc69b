"""``sopagent serve`` and ``sopagent keys``: the command functions (registered in :mod:`sopagent.cli`)."""

from __future__ import annotations

import argparse
import os
import sys

from sopagent.errors import ApiKeyError
from sopagent.settings import add_setting_flags


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the HTTP service with uvicorn (one process, or ``--workers N`` sharing the database)."""
    import uvicorn

    from sopagent.policy import load_policy
    from sopagent.server.config import CONFIG_ENV, ServeConfig
    from sopagent.server.workers import reuse_port_supported, run_workers
    from sopagent.settings import Settings

    if args.turns_in_flight < 1 or (args.threads is not None and args.threads < 1):
        print("sopagent serve: --turns-in-flight and --threads must be at least 1", file=sys.stderr)
        return 2
    threads = args.threads or (max(1, (os.cpu_count() or 1) // args.workers) if args.workers > 1 else None)
    settings = Settings.from_args(args)
    config = ServeConfig(policies=[str(p) for p in args.policies], db=settings.database_url(),
                         model=settings.model or None, config_file=settings.config_path,
                         model_threads=threads, model_timeout_s=args.model_timeout,
                         turns_in_flight=args.turns_in_flight, turn_wait_s=args.turn_wait, webhook_url=args.webhook,
                         max_message_chars=args.max_message_chars, confidence=settings.agent.confidence_threshold,
                         rate_limit=args.rate_limit, failed_auth_limit=args.failed_auth_limit,
                         long_polls_per_key=args.long_polls_per_key, max_connections=args.max_connections,
                         header_timeout_s=args.header_timeout, anchor_key=args.anchor_key,
                         checkpoint_dir=args.checkpoints, checkpoint_every=args.checkpoint_every,
                         chat_origins=args.chat_origin)
    try:
        config.frame_ancestors()
    except ValueError as exc:
        print(f"sopagent serve: {exc}", file=sys.stderr)
        return 2
    if bool(config.anchor_key) != bool(config.checkpoint_dir):
        print("sopagent serve: pass both --anchor-key KEY and --checkpoints DIR to write checkpoints", file=sys.stderr)
        return 2
    for path in config.policies:
        load_policy(path)  # authoring errors are reported here, before any worker starts
    if args.workers > 1 and not (config.db or "").startswith("postgresql"):
        print("warning: several workers on SQLite serialize on one file and may answer 409 for concurrent "
              "turns of one conversation; use --db postgresql+psycopg://... to scale out", file=sys.stderr)
    print(f"serving {', '.join(config.policies)} on http://{args.host}:{args.port} "
          f"({args.workers} worker{'s' if args.workers > 1 else ''}; OpenAPI at /docs and /openapi.json)",
          file=sys.stderr, flush=True)
    if args.workers > 1 and reuse_port_supported():  # one socket per worker: the kernel spreads connections
        return run_workers(config.to_env(), args.host, args.port, args.workers, args.log_level)
    if args.workers > 1:
        os.environ[CONFIG_ENV] = config.to_env()
        uvicorn.run("sopagent.server.app:app_from_env", factory=True, host=args.host, port=args.port,
                    workers=args.workers, log_level=args.log_level, timeout_graceful_shutdown=5,
                    limit_concurrency=config.connection_cap(),
                    http="sopagent.server.protocol:HeaderDeadlineProtocol")  # the default header deadline
    else:
        from sopagent.server.app import create_app
        from sopagent.server.protocol import protocol_with

        uvicorn.run(create_app(config), host=args.host, port=args.port, log_level=args.log_level,
                    timeout_graceful_shutdown=5, limit_concurrency=config.connection_cap(),
                    http=protocol_with(config.header_timeout_s))
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    """Create, revoke or list API keys."""
    from sopagent.compose import open_store
    from sopagent.server import keys
    from sopagent.settings import Settings

    store = open_store(Settings.from_args(args))
    if args.keys_command == "create":
        row, secret = keys.create_key(store, args.scope, args.name, args.tenant)
        print(secret)
        print(f"created {row.id} ({row.scope}, tenant {row.tenant}, name {row.name!r}); the key is shown only "
              "once: store it now",
              file=sys.stderr)
        return 0
    if args.keys_command == "revoke":
        row = keys.revoke_key(store, args.key_id)
        print(f"revoked {row.id} ({row.scope}, name {row.name!r}) at {row.revoked_at}")
        return 0
    for row in keys.list_keys(store):
        state = f"revoked {row.revoked_at}" if row.revoked_at else "active"
        print(f"{row.id}  {row.scope:<12}  tenant {row.tenant}  {row.name}  created {row.created_at}  {state}")
    return 0


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``serve`` and ``keys`` to the ``sopagent`` parser."""
    serve = sub.add_parser("serve", help="run the HTTP API (support-bot backend, OpenAI-compatible chat)")
    serve.add_argument("policies", nargs="+", metavar="POLICY", help="policy files to serve")
    add_setting_flags(serve, confidence=True)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1, help="processes (use PostgreSQL for more than one)")
    serve.add_argument("--threads", type=int, default=None,
                       help="CPU threads of an in-process model per worker (default: the cores divided among "
                            "the workers, so that workers do not oversubscribe the CPU)")
    serve.add_argument("--model-timeout", type=float, default=30.0,
                       help="seconds before a model call gives the fallback reply (escalated)")
    serve.add_argument("--turns-in-flight", type=int, default=4,
                       help="turns per worker past admission at once; the rest wait in order holding no "
                            "database connection (default 4: the model serves one at a time)")
    serve.add_argument("--turn-wait", type=float, default=600.0,
                       help="seconds a turn may wait for admission before 503 (nothing recorded or sent)")
    serve.add_argument("--webhook", help="URL that receives a JSON POST for every escalation")
    serve.add_argument("--max-message-chars", type=int, default=4000)
    serve.add_argument("--rate-limit", default="6000/minute",
                       help="requests one key may send (e.g. 6000/minute: a chat key carries all its customers)")
    serve.add_argument("--failed-auth-limit", default="60/minute",
                       help="requests with a missing or wrong key one client address may send before 429")
    serve.add_argument("--long-polls-per-key", type=int, default=200, help="long-polls one key may hold open")
    serve.add_argument("--max-connections", type=int, default=None,
                       help="connections handled at once per worker; more are answered 503 (default: the "
                            "open-file limit less 256)")
    serve.add_argument("--header-timeout", type=float, default=10.0,
                       help="seconds a client may take to send a request's headers before it is cut off")
    serve.add_argument("--anchor-key", help="Ed25519 key from `sopagent audit keygen`: sign audit checkpoints")
    serve.add_argument("--checkpoints", help="directory for signed audit checkpoints (keep it on write-once storage)")
    serve.add_argument("--checkpoint-every", type=int, default=1000,
                       help="write a checkpoint once the chain has grown by this many records (default 1000)")
    serve.add_argument("--chat-origin", action="append", default=[], metavar="ORIGIN",
                       help="a site that may embed the web chat (e.g. https://www.bank.example); repeat for more. "
                            "Without one the chat page opens only on its own (at /chat)")
    serve.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    serve.set_defaults(func=cmd_serve)

    keys = sub.add_parser("keys", help="API keys for `sopagent serve`")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key and print it once")
    create.add_argument("--scope", required=True, choices=["customer", "operator", "browser"],
                        help="customer: a chat back end; operator: approve and take over; browser: the key "
                             "published in a web page for the web chat (it can only start conversations)")
    create.add_argument("--name", help="channel or operator name (recorded with operator actions)")
    create.add_argument("--tenant", default="default",
                        help="the tenant whose conversations the key may start, read and act on (default: default)")
    add_setting_flags(create, model=False)
    revoke = keys_sub.add_parser("revoke", help="revoke a key by its id (key_...)")
    revoke.add_argument("key_id")
    add_setting_flags(revoke, model=False)
    listing = keys_sub.add_parser("list", help="list keys (never the secrets)")
    add_setting_flags(listing, model=False)
    for p in (keys, create, revoke, listing):
        p.set_defaults(func=cmd_keys)


__all__ = ["ApiKeyError", "cmd_keys", "cmd_serve", "register"]
