"""``sopagent audit``: list, show, export, verify, versions, replay, erase, purge."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sopagent.audit.query import AuditFilter
from sopagent.settings import Settings, add_setting_flags


def register(sub: Any) -> None:
    """Register ``audit`` and its subcommands on the main parser's subparsers."""
    audit = sub.add_parser("audit", help="query, export, verify, replay and erase the audit log")
    cmds = audit.add_subparsers(dest="audit_command", required=True)

    def filters(p: argparse.ArgumentParser) -> None:
        p.add_argument("--conversation", help="conversation id")
        p.add_argument("--customer", help="customer reference")
        p.add_argument("--policy-name", dest="policy_name", help="policy name")
        p.add_argument("--policy-version", help="version label (1.0) or stored version id (#3)")
        p.add_argument("--response", help="catalog response id")
        p.add_argument("--status", help="sent, pending, escalated or received")
        p.add_argument("--operator", help="operator name")
        p.add_argument("--since", help="from this ISO time (inclusive)")
        p.add_argument("--until", help="before this ISO time")
        p.add_argument("--kind", choices=("all", "decisions", "actions"), default="all")
        p.add_argument("--limit", type=int)

    p = cmds.add_parser("list", help="one line per decision or operator action")
    filters(p)
    p.set_defaults(audit_func=cmd_list)
    p = cmds.add_parser("show", help="explain one decision in plain words")
    p.add_argument("decision_id", type=int)
    p.set_defaults(audit_func=cmd_show)
    p = cmds.add_parser("export", help="write rows as JSON Lines or CSV")
    filters(p)
    p.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    p.add_argument("--out", "-o", help="file to write (default: standard output)")
    p.set_defaults(audit_func=cmd_export)
    p = cmds.add_parser("verify", help="check the hash chain and the stored policy versions (exit 0 only if intact)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: one per CPU on big chains)")
    p.add_argument("--checkpoints", help="directory (or file) of signed checkpoints to check the chain against")
    p.add_argument("--public-key", help="the signing key's public key (KEY.pub from `audit keygen`)")
    p.set_defaults(audit_func=cmd_verify)
    p = cmds.add_parser("keygen", help="create the Ed25519 key that signs checkpoints (kept outside the database)")
    p.add_argument("--out", required=True, help="private key file to create (0600); the public key goes to OUT.pub")
    p.set_defaults(audit_func=cmd_keygen)
    p = cmds.add_parser("checkpoint", help="sign the records appended since the last checkpoint into DIR")
    p.add_argument("--key", required=True, help="the private key from `audit keygen`")
    p.add_argument("--out", required=True, help="checkpoint directory (keep it on write-once storage)")
    p.set_defaults(audit_func=cmd_checkpoint)
    p = cmds.add_parser("versions", help="list stored policy versions")
    p.set_defaults(audit_func=cmd_versions)
    p = cmds.add_parser("replay", help="re-run recorded conversations under another policy version")
    p.add_argument("--policy", required=True, help="policy file, or stored policy version id (#3)")
    filters(p)
    p.add_argument("--max-changed-share", type=float, default=None,
                   help="exit 1 when more than this share (0..1) of replayed turns would change")
    p.add_argument("--details", action="store_true", help="print every changed turn")
    p.set_defaults(audit_func=cmd_replay)
    p = cmds.add_parser("erase", help="erase one customer's personal data (recorded as an operator action)")
    p.add_argument("--customer", required=True, help="customer reference")
    p.add_argument("--operator", required=True)
    p.add_argument("--reason", required=True, help="e.g. the request's ticket number (no personal data)")
    p.set_defaults(audit_func=cmd_erase)
    p = cmds.add_parser("purge", help="retention: clear personal content older than N days")
    p.add_argument("--older-than-days", type=int, required=True)
    p.add_argument("--operator", default="retention")
    p.add_argument("--reason", default="")
    p.set_defaults(audit_func=cmd_purge)
    for name, command in cmds.choices.items():  # replay runs the model for the turns whose input changed
        add_setting_flags(command, model=name == "replay")
    audit.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Dispatch to the audit subcommand."""
    return int(args.audit_func(args))


def _store(args: argparse.Namespace) -> Any:
    from sopagent.compose import open_store

    return open_store(Settings.from_args(args))


def _filter(args: argparse.Namespace) -> AuditFilter:
    return AuditFilter(conversation=args.conversation, customer=args.customer, policy=args.policy_name,
                       policy_version=args.policy_version, response=args.response, status=args.status,
                       operator=args.operator, since=args.since, until=args.until, kind=args.kind, limit=args.limit)


def cmd_list(args: argparse.Namespace) -> int:
    """Print matching rows, one per line."""
    from sopagent.audit.explain import summary_line
    from sopagent.audit.query import select_rows
    from sopagent.store import Decision

    store = _store(args)
    rows = select_rows(store, _filter(args))
    actions = store.effects_by_decision()
    for row in rows:
        done = [f"{e.name} {e.status}" for e in actions.get(row.id or 0, [])] if isinstance(row, Decision) else []
        print(summary_line(row) + (f"  actions: {', '.join(done)}" if done else ""))
    print(f"{len(rows)} records", file=sys.stderr)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """Explain one decision."""
    from sopagent.audit.explain import explain_decision

    print(explain_decision(_store(args), args.decision_id))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Write JSONL or CSV."""
    from sopagent.audit.export import effects_by_decision, write_csv, write_jsonl
    from sopagent.audit.query import select_rows

    store = _store(args)
    rows = select_rows(store, _filter(args))
    effects = effects_by_decision(store)
    writer = write_csv if args.format == "csv" else write_jsonl
    if args.out:
        # utf-8-sig: spreadsheet programs then read the file as UTF-8
        encoding = "utf-8-sig" if args.format == "csv" else "utf-8"
        with open(args.out, "w", newline="", encoding=encoding) as stream:
            count = writer(rows, stream, effects)
    else:
        count = writer(rows, sys.stdout, effects)
    print(f"exported {count} records", file=sys.stderr)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Verify the chain; exit 0 only when intact."""
    import time

    from sopagent.outbox import verify_outbox
    from sopagent.store.verify import verify_engine

    store = _store(args)
    started = time.perf_counter()
    report = verify_engine(store.engine, workers=args.workers)
    print(report.describe() + f" ({time.perf_counter() - started:.2f} s)")
    problems = verify_outbox(store)
    for problem in problems:
        print(f"outbox BROKEN: {problem}")
    if not problems:
        print(f"outbox verified: {len(store.effects())} actions match their decisions' sealed plans and outcomes")
    anchored = True
    if args.checkpoints or args.public_key:
        if not (args.checkpoints and args.public_key):
            print("pass both --checkpoints DIR and --public-key KEY.pub to check the chain against checkpoints",
                  file=sys.stderr)
            return 2
        from sopagent.audit.anchor import verify_checkpoints

        anchor = verify_checkpoints(store, args.public_key, args.checkpoints)
        anchored = anchor.anchored
        print(anchor.describe())
    else:
        print("no checkpoints given: the chain is only self-consistent and unanchored (a database writer could "
              "rewrite it and recompute its hashes); pass --checkpoints DIR --public-key KEY.pub")
    return 0 if report.intact and not problems and anchored else 1


def cmd_keygen(args: argparse.Namespace) -> int:
    """Create the checkpoint signing key and its public key."""
    from sopagent.audit.anchor import generate_key

    public = generate_key(args.out)
    print(f"signing key written to {args.out} (0600; keep it away from the database and its writers)")
    print(f"public key written to {public} (give it to whoever verifies: `audit verify --public-key`)")
    return 0


def cmd_checkpoint(args: argparse.Namespace) -> int:
    """Sign the chain's new records into a checkpoint file."""
    from sopagent.audit.anchor import write_checkpoint

    path = write_checkpoint(_store(args), args.key, args.out)
    print(f"checkpoint written: {path}" if path else "the chain has not grown since the last checkpoint")
    return 0


def cmd_versions(args: argparse.Namespace) -> int:
    """List stored policy versions."""
    from sqlmodel import col, select

    from sopagent.store import PolicyVersion

    with _store(args).session() as session:
        for v in session.exec(select(PolicyVersion).order_by(col(PolicyVersion.id))).all():
            import json

            modules = ", ".join(json.loads(v.modules_json or "{}").get("modules", {})) or "none"
            print(f"#{v.id}  {v.name} {v.version}  source {v.source_sha256[:12]}  catalog {v.catalog_sha256[:12]}  "
                  f"helper modules: {modules}  stored {v.created_at[:19]}")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    """Replay and report; with --max-changed-share, exit 1 when too much would change."""
    from sopagent.audit.replay import load_policy_spec, replay

    store = _store(args)
    policy = load_policy_spec(store, args.policy)

    def model_factory() -> Any:
        from sopagent.compose import open_model
        from sopagent.models.embedded import progress_printer
        from sopagent.models.spec import redact

        settings = Settings.from_args(args)
        print(f"loading model{' ' + redact(settings.model) if settings.model else ''} for changed turns ...",
              file=sys.stderr)
        return open_model(settings, progress=progress_printer(sys.stderr))

    report = replay(store, policy, _filter(args), model_factory)
    changes = report.changes
    if args.details or len(changes) <= 20:
        for c in changes:
            print(f"  decision {c.decision_id} ({c.conversation_id[:8]} turn {c.turn}, step {c.step}): "
                  f"{c.recorded} -> {c.replayed}  [{', '.join(c.what)}]")
            for change in c.effects:
                print(f"      {change}")
    for note in report.skipped:
        print(f"  skipped {note}")
    print(report.summary())
    if args.max_changed_share is not None and report.changed_share > args.max_changed_share:
        print(f"FAIL: {report.changed_share:.1%} of past turns would change, more than the allowed "
              f"{args.max_changed_share:.1%}", file=sys.stderr)
        return 1
    return 0


def cmd_erase(args: argparse.Namespace) -> int:
    """Erase a customer's personal data."""
    from sopagent.audit.erase import erase_customer

    print(erase_customer(_store(args), args.customer, args.operator, args.reason).describe())
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    """Retention purge."""
    from sopagent.audit.erase import purge_older_than

    print(purge_older_than(_store(args), args.older_than_days, args.operator, args.reason).describe())
    return 0
