"""Operator console latency on a large audit store: open the app, refresh the list, open a conversation.

Seeds a SQLite store with 1,000 conversations and 50,000 chained decisions (bulk inserts), then drives
the real app with Pilot and times the app's own work with time.perf_counter (median of repetitions).
Baseline in the same run: the naive read (every conversation and every pending decision through the
ORM, counted in Python) that the console's SQL aggregate replaces.

    .venv/bin/python benchmarks/console_latency.py [--conversations 1000] [--decisions 50000] [--reps 7]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

from sqlalchemy import insert, update
from textual.worker import WorkerCancelled

from sopagent import Store, load_policy
from sopagent.console import create_app
from sopagent.console.queries import approval_queue, conversation_detail, conversation_page
from sopagent.store import ChainHead, Conversation, Decision
from sopagent.store.chain import seal

ROOT = Path(__file__).resolve().parent.parent
OPTIONS = json.dumps([
    {"response_id": "fee_refund_declined_amount", "next_step": "anything_else", "probability": 0.45,
     "slots": {"amount": "95.00", "fee_type": "annual"}},
    {"response_id": "fee_refund_supervisor_review", "next_step": "anything_else", "probability": 0.55,
     "slots": {"amount": "95.00", "fee_type": "annual"}}], sort_keys=True)


def seed(store: Store, conversations: int, decisions: int) -> None:
    """Bulk-write conversations and a valid hash chain of decisions (every 10th conversation pending)."""
    policy = load_policy(ROOT / "policies" / "card_services.py")
    version = store.policy_version(policy.name, policy.version, policy.source_text, policy.source_sha256,
                                   policy.catalog.source, policy.catalog.sha256)
    digest = store.policy_digest_of(version)
    per = decisions // conversations
    conv_rows: list[dict[str, Any]] = []
    dec_rows: list[dict[str, Any]] = []
    prev, seq = "0" * 64, 0
    for c in range(conversations):
        cid = f"{c:08x}-0000-4000-8000-{c:012x}"
        pending = c % 10 == 0
        for t in range(per):
            seq += 1
            stamp = f"2026-11-{1 + (seq * 29 // decisions):02d}T{(seq // 3600) % 24:02d}:{(seq // 60) % 60:02d}:" \
                    f"{seq % 60:02d}.000000+00:00"
            last = t == per - 1
            row = Decision(conversation_id=cid, turn=t + 1, created_at=stamp, policy_version_id=version.id or 0,
                           policy_sha256=digest, model_name="bench", step="fee_refund", chosen_index=1,
                           response_id="fee_refund_supervisor_review", chosen_by="model", confidence=0.55,
                           status="pending" if pending and last else "sent", next_step="anything_else",
                           latency_json='{"choose": 210.0, "extract": 180.0}', customer_text=f"message {t}",
                           facts_json='{"fee_type": "annual"}', options_json=OPTIONS,
                           reply_text="reply", sent_text="reply")
            seal(row, prev, seq)
            prev = row.hash
            dec_rows.append(row.model_dump(exclude={"id"}))
        conv_rows.append(dict(id=cid, policy_name=policy.name, policy_version_id=version.id, customer_ref=f"cust-{c:05d}",
                              metadata_json="{}", step="fee_refund",
                              status="awaiting_approval" if pending else "active", known_json="{}", turns=per,
                              revision=per, created_at=dec_rows[-per]["created_at"],
                              updated_at=dec_rows[-1]["created_at"], erased_at=None))
    with store.session() as session:
        session.execute(insert(Conversation), conv_rows)
        for start in range(0, len(dec_rows), 5000):
            session.execute(insert(Decision), dec_rows[start:start + 5000])
        session.execute(update(ChainHead).where(ChainHead.id == 1).values(last_hash=prev, length=seq))
        session.commit()


def naive_list(store: Store) -> int:
    """Baseline: every conversation and every pending decision through the ORM, counted in Python."""
    with store.session() as session:
        from sqlmodel import select

        rows = session.exec(select(Conversation)).all()
    pending: dict[str, int] = {}
    for d in store.pending_decisions():
        pending[d.conversation_id] = pending.get(d.conversation_id, 0) + 1
    return len(sorted(rows, key=lambda r: r.updated_at, reverse=True)[:200]) + len(pending)


def timed(fn: Callable[[], Any], reps: int) -> float:
    """Median milliseconds of ``fn`` over ``reps`` runs."""
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


async def settle(pilot: Any) -> None:
    """Wait for the app's workers and a render pass."""
    try:
        await pilot.app.workers.wait_for_complete()
    except WorkerCancelled:
        pass
    await pilot.pause()


async def measure_app(store: Store, reps: int) -> dict[str, float]:
    """Median ms for opening the app (list shown), refreshing the list, opening a conversation."""
    from sopagent.console.screens.conversation import ConversationScreen

    from textual.screen import Screen
    from textual.widgets import Footer, Header, Static

    class Floor(Screen[None]):
        """Baseline: the cheapest screen (header, one line, footer) pushed and rendered the same way."""

        def compose(self) -> Any:
            yield Header()
            yield Static("floor")
            yield Footer()

    opens, refreshes, conversations, floors = [], [], [], []
    for _ in range(max(3, reps // 2)):
        app = create_app(store, "bench", poll_interval=0)
        start = time.perf_counter()
        async with app.run_test(size=(120, 40)) as pilot:
            table = None
            while table is None or table.row_count == 0:
                await settle(pilot)
                table = app.screen.query_one("#conversations")
            opens.append((time.perf_counter() - start) * 1000)
            if not refreshes:
                for _ in range(reps):
                    screen: Any = app.screen
                    start = time.perf_counter()
                    screen._last = object()  # force a full reload and re-render
                    screen.action_refresh()
                    await settle(pilot)
                    refreshes.append((time.perf_counter() - start) * 1000)
                for index in range(reps):
                    table.move_cursor(row=index * 7 % table.row_count)
                    start = time.perf_counter()
                    await pilot.press("enter")
                    await settle(pilot)
                    assert isinstance(app.screen, ConversationScreen) and app.screen.detail is not None
                    conversations.append((time.perf_counter() - start) * 1000)
                    await pilot.press("escape")
                    await settle(pilot)
                    start = time.perf_counter()
                    app.push_screen(Floor())
                    await settle(pilot)
                    floors.append((time.perf_counter() - start) * 1000)
                    app.pop_screen()
                    await settle(pilot)
    return {"baseline: push an empty screen (Textual floor)": statistics.median(floors),"open app (list shown)": statistics.median(opens),
            "refresh list": statistics.median(refreshes),
            "open conversation": statistics.median(conversations)}


def main() -> None:
    """Seed, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=1000)
    parser.add_argument("--decisions", type=int, default=50000)
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        store = Store(f"sqlite:///{path}")
        start = time.perf_counter()
        seed(store, args.conversations, args.decisions)
        seed_s = time.perf_counter() - start
        size_mb = sum(p.stat().st_size for p in Path(tmp).glob("bench.db*")) / 1e6
        print(f"store: {args.conversations} conversations, {args.decisions} decisions, {size_mb:.1f} MB "
              f"(seeded in {seed_s:.1f} s)")
        some = conversation_page(store).rows[3].id
        queries = {
            "list query (200 rows, pending counts in SQL)": timed(lambda: conversation_page(store), args.reps),
            "baseline: naive list (ORM, counted in Python)": timed(lambda: naive_list(store), args.reps),
            "approval queue query": timed(lambda: approval_queue(store), args.reps),
            "conversation query (50 turns)": timed(lambda: conversation_detail(store, some), args.reps),
        }
        app_figures = asyncio.run(measure_app(store, args.reps))
        for name, ms in {**queries, **app_figures}.items():
            goal = "  (goal < 150 ms)" if name in app_figures and not name.startswith("baseline") else ""
            print(f"{name:48s} {ms:8.1f} ms{goal}")
        base = queries["baseline: naive list (ORM, counted in Python)"]
        floor = app_figures["baseline: push an empty screen (Textual floor)"]
        print(f"open conversation / empty-screen floor: {app_figures['open conversation'] / floor:.1f}x")
        print(f"naive list / console list query: {base / queries['list query (200 rows, pending counts in SQL)']:.1f}x")
        print(store.verify_chain().describe() if args.decisions <= 50000 else "")


if __name__ == "__main__":
    main()
