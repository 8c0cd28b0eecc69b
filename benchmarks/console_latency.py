"""Operator console latency on a large audit store: open the app, refresh the list, open a conversation.

Seeds a SQLite store with 1,000 conversations and 50,000 chained decisions (bulk inserts), then drives
the real app with Pilot and times each operation with two clocks: time.perf_counter (wall, what the
operator waits, inflated by other processes on a busy machine) and time.process_time (CPU time of this
process and its worker threads: the app's own work, which other processes do not inflate). Medians of
repetitions. The first app of each process also imports the console's screens and the Textual
widgets they use; it is reported on its own line ("first open in a process"), the later opens are
the app's own work. Baselines in the same run: an app that shows an empty screen and pushing an empty screen
(Textual's floor, measured the same way), and the naive list read (every conversation and every
pending decision through the ORM, counted in Python) that the console's SQL aggregate replaces.

``--before REF`` also measures the console as it was at git REF (e.g. ``main``) on the same store,
in alternating subprocesses, so that before and after see the same machine state.

    .venv/bin/python benchmarks/console_latency.py [--conversations 1000] [--decisions 50000] [--reps 7]
        [--db bench.db] [--before main] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable

from sqlalchemy import insert, select, update
from textual.worker import WorkerCancelled

from sopagent import Store, load_policy
from sopagent.console import create_app, queries
from sopagent.console.queries import approval_queue, conversation_detail, conversation_page
from sopagent.store import ChainHead, Conversation, Decision
from sopagent.store.chain import seal

ROOT = Path(__file__).resolve().parent.parent
LIST_PAGE = getattr(queries, "LIST_PAGE", 200)
"""Rows the console's list reads first (200 before paging; ``--before`` may import older code)."""
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
        conv_rows.append(dict(id=cid, policy_name=policy.name, policy_version_id=version.id,
                              customer_ref=f"cust-{c:05d}",
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
    return len(sorted(rows, key=lambda r: r.updated_at, reverse=True)[:LIST_PAGE]) + len(pending)


Sample = tuple[float, float]
"""One measurement: (wall ms, CPU ms)."""


def timed(fn: Callable[[], Any], reps: int) -> float:
    """Median wall milliseconds of ``fn`` over ``reps`` runs."""
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


class Clock:
    """Wall and CPU time since construction, in milliseconds."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def read(self) -> Sample:
        """(wall ms, CPU ms) elapsed."""
        return (time.perf_counter() - self.wall) * 1000, (time.process_time() - self.cpu) * 1000


async def settle(pilot: Any) -> None:
    """Wait for the app's workers and a render pass."""
    try:
        await pilot.app.workers.wait_for_complete()
    except WorkerCancelled:
        pass
    await pilot.pause()


def touch(store: Store, index: int) -> None:
    """Give the ``index``-th oldest conversation new activity, so that it moves to the top of the list."""
    with store.session() as session:
        cid = session.execute(select(Conversation.id).order_by(Conversation.updated_at).offset(index)
                              .limit(1)).scalar_one()
        newest = session.execute(select(Conversation.updated_at).order_by(Conversation.updated_at.desc())
                                 .limit(1)).scalar_one()
        later = (datetime.fromisoformat(newest) + timedelta(microseconds=1)).isoformat(timespec="microseconds")
        session.execute(update(Conversation).where(Conversation.id == cid).values(updated_at=later))
        session.commit()


async def measure_app(store: Store, reps: int) -> dict[str, list[Sample]]:
    """(wall, CPU) samples for opening the app, refreshing the list, opening a conversation, and the floors."""
    from textual.app import App
    from textual.screen import Screen
    from textual.widgets import Footer, Header, Static

    from sopagent.console.screens.conversation import ConversationScreen

    class Floor(Screen[None]):
        """Baseline: the cheapest screen (header, one line, footer) pushed and rendered the same way."""

        def compose(self) -> Any:
            yield Header()
            yield Static("floor")
            yield Footer()

    class FloorApp(App[None]):
        """Baseline: an app that shows the floor screen."""

        def on_mount(self) -> None:
            self.push_screen(Floor())

    samples: dict[str, list[Sample]] = {name: [] for name in (
        "baseline: start an app showing an empty screen", "open app (list shown)",
        "baseline: first start of an empty app in a process", "first open in a process (imports included)",
        "baseline: push an empty screen", "refresh list (same data, re-read)",
        "refresh list (one conversation moved to the top)", "open conversation")}
    for round_ in range(max(3, reps // 2) + 1):
        # Round 0 is the first app in this process: it also imports the console's screens and the
        # Textual widgets they use (once per process, like Textual itself, which is imported before
        # any clock starts). It is reported on its own lines; the other rounds are the app's work.
        first_round = round_ == 0
        floor_app = FloorApp()
        clock = Clock()
        async with floor_app.run_test(size=(120, 40)) as pilot:
            while not isinstance(floor_app.screen, Floor):
                await settle(pilot)
            await settle(pilot)
            samples["baseline: first start of an empty app in a process" if first_round
                    else "baseline: start an app showing an empty screen"].append(clock.read())
        app = create_app(store, "bench", poll_interval=0)
        clock = Clock()
        async with app.run_test(size=(120, 40)) as pilot:
            table = None
            while table is None or table.row_count == 0:
                await settle(pilot)
                table = app.screen.query_one("#conversations")
            samples["first open in a process (imports included)" if first_round
                    else "open app (list shown)"].append(clock.read())
            if not first_round:
                continue
            for rep in range(reps):
                screen: Any = app.screen
                clock = Clock()
                screen._last = object()  # forget the last data: a full re-read and show()
                screen.action_refresh()
                await settle(pilot)
                samples["refresh list (same data, re-read)"].append(clock.read())
                touch(store, rep)
                first = table.get_row_at(0)
                clock = Clock()
                screen.action_refresh()
                await settle(pilot)
                samples["refresh list (one conversation moved to the top)"].append(clock.read())
                assert table.get_row_at(0) != first, "the touched conversation did not move to the top"
            for index in range(reps):
                table.move_cursor(row=index * 7 % table.row_count)
                clock = Clock()
                await pilot.press("enter")
                await settle(pilot)
                assert isinstance(app.screen, ConversationScreen) and app.screen.detail is not None
                samples["open conversation"].append(clock.read())
                await pilot.press("escape")
                await settle(pilot)
                clock = Clock()
                app.push_screen(Floor())
                await settle(pilot)
                samples["baseline: push an empty screen"].append(clock.read())
                app.pop_screen()
                await settle(pilot)
    return samples


def checkout(ref: str, into: Path) -> Path:
    """The project's files at git ``ref``, extracted under ``into`` (for measuring the console as it was)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def measure_in_subprocess(db: Path, reps: int, code: Path) -> dict[str, list[Sample]]:
    """Run :func:`measure_app` in a fresh process that imports sopagent from ``code``."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    out = subprocess.run([sys.executable, __file__, "--db", str(db), "--reps", str(reps), "--app-only"],
                         check=True, capture_output=True, text=True, env=env).stdout
    return {k: [tuple(s) for s in v] for k, v in json.loads(out.splitlines()[-1]).items()}  # type: ignore[misc]


def med(samples: list[Sample], clock: int) -> float:
    """Median of one clock (0 wall, 1 CPU)."""
    return statistics.median(s[clock] for s in samples)


def report(label: str, samples: dict[str, list[Sample]]) -> None:
    """Print wall and CPU medians, and each one's ratio to its Textual floor."""
    app_floor = samples["baseline: start an app showing an empty screen"]
    first_floor = samples["baseline: first start of an empty app in a process"]
    push_floor = samples["baseline: push an empty screen"]
    print(f"\n{label}  (median of n; x = ratio to the floor on the same clock; goal < 150 ms)")
    print(f"{'operation':50s} {'n':>3s} {'wall ms':>9s} {'CPU ms':>9s} {'wall x':>7s} {'CPU x':>7s}")
    for name, values in samples.items():
        floor = (first_floor if name.startswith(("first open", "baseline: first")) else
                 app_floor if name.startswith(("open app", "baseline: start")) else push_floor)
        print(f"{name:50s} {len(values):3d} {med(values, 0):9.1f} {med(values, 1):9.1f} "
              f"{med(values, 0) / med(floor, 0):7.2f} {med(values, 1) / med(floor, 1):7.2f}")


def main() -> None:
    """Seed, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=1000)
    parser.add_argument("--decisions", type=int, default=50000)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--db", type=Path, help="reuse (or seed once) the store at this SQLite file")
    parser.add_argument("--before", metavar="REF", help="also measure the console at this git ref (e.g. main)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating before/after rounds with --before")
    parser.add_argument("--app-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.db or Path(tmp) / "bench.db"
        store = Store(f"sqlite:///{path}")
        if args.app_only:
            print(json.dumps(asyncio.run(measure_app(store, args.reps))))
            return
        start = time.perf_counter()
        with store.session() as session:
            head = session.get(ChainHead, 1)
            seeded = head is not None and head.length > 0
        if not seeded:
            seed(store, args.conversations, args.decisions)
        seed_s = time.perf_counter() - start
        size_mb = sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) / 1e6
        print(f"store: {store.verify_chain().describe()}, {size_mb:.1f} MB (ready in {seed_s:.1f} s); "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        some = conversation_page(store).rows[3].id
        queries = {
            "list query (first page, pending counts in SQL)": timed(lambda: conversation_page(store), args.reps),
            "baseline: naive list (ORM, counted in Python)": timed(lambda: naive_list(store), args.reps),
            "approval queue query": timed(lambda: approval_queue(store), args.reps),
            "conversation query (50 turns)": timed(lambda: conversation_detail(store, some), args.reps),
        }
        for name, ms in queries.items():
            print(f"{name:50s} {ms:8.1f} ms wall")
        base = queries["baseline: naive list (ORM, counted in Python)"]
        listed = queries["list query (first page, pending counts in SQL)"]
        print(f"naive list / console list query: {base / listed:.1f}x")
        if not args.before:
            report("console (this checkout)", asyncio.run(measure_app(store, args.reps)))
            return
        old = checkout(args.before, Path(tmp) / "before")
        before: dict[str, list[Sample]] = {}
        after: dict[str, list[Sample]] = {}
        for _ in range(args.rounds):
            for into, code in ((before, old), (after, ROOT)):
                for name, values in measure_in_subprocess(path, args.reps, code).items():
                    into.setdefault(name, []).extend(values)
        report(f"before: console at {args.before}", before)
        report("after: console in this checkout", after)
        print(f"load average after the run {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
