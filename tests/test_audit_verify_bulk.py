"""The bulk verification path: its canonical texts equal the reference ones, its reports equal the reference
reports whatever the window size and worker count, and erasure on PostgreSQL leaves no trace in any table."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from sopagent.audit.erase import erase_customer
from sopagent.engine import Agent
from sopagent.models.scripted import ScriptedModel
from sopagent.operations import Operations
from sopagent.store import Store
from sopagent.store.chain import (
    KIND_FIELDS,
    ChainReport,
    RowCodec,
    canonical,
    merge_by_seq,
    record_columns,
    record_from_tuple,
    verify_rows,
)
from sopagent.store.verify import chain_head, erased_allowed, stored_policy_digests, verify_engine

OK = "not_requested"
FEE = {"intent": "fee_refund", "handoff": OK}
ID_MARIA = {"card_last4": "4821", "date_of_birth": "1985-03-14", "handoff": OK}
SECRET = "Quillonbeck Zarathustrine"

# Everything a stored column can hold, and then some: text with quotes, backslashes, control and
# non-ASCII characters, big and negative integers, floats including NaN, infinities and -0.0.
VALUES = st.one_of(st.none(), st.text(), st.integers(), st.floats(), st.sampled_from(["", '"', "\\", "\x00\x1f\x7f",
                                                                                    "é ü 中 😀", "%s %% {}"]))


def _reference_texts(kind: str, row: tuple) -> list[str]:
    record = record_from_tuple(kind, row)
    public = dict(record.public, kind=kind, seq=record.seq, commitment=record.commitment)
    as_dumps = [json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
                for content in (record.personal, public)]
    texts = [canonical(record.personal), canonical(public)]
    assert texts == as_dumps  # canonical is json.dumps with sorted keys
    return texts


@pytest.mark.parametrize("kind", ["decision", "action"])
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_codec_texts_equal_the_canonical_json(kind: str, data) -> None:
    width = len(record_columns(kind))
    rows = data.draw(st.lists(st.tuples(*[VALUES] * width), min_size=1, max_size=4))
    texts = RowCodec.of(kind).texts(rows)
    assert texts is not None and len(texts) == 2 * len(rows)
    for i, row in enumerate(rows):
        assert texts[2 * i:2 * i + 2] == _reference_texts(kind, row)


def test_codec_declines_values_it_cannot_encode() -> None:
    row = tuple(range(len(record_columns("action"))))
    codec = RowCodec.of("action")
    assert codec.texts([row]) == _reference_texts("action", row)
    public, personal = KIND_FIELDS["action"]
    at = record_columns("action").index(personal[0])
    assert codec.texts([row, row[:at] + (b"bytes",) + row[at + 1:]]) is None
    assert codec.texts([row[:at] + ([1, 2],) + row[at + 1:]]) is None  # a list would add items
    assert math.isnan(json.loads(codec.texts([row[:at] + (float("nan"),) + row[at + 1:]])[0])[personal[0]])


def _history(card_policy, store: Store) -> None:
    """Two customers, 11 chained rows: decisions at 1, 4-5, 7, 10-11, operator actions at 2-3 and 8-9, and at
    6 the outcome of the first customer's fee refund (an ``effects`` action; the second is declined as a
    refund within 12 months)."""
    model = ScriptedModel(facts=[FEE, ID_MARIA, {"fee_type": "late payment", "handoff": OK}] * 2)
    agent = Agent(card_policy, model, store)
    ops = Operations(store, "ana")
    for ref in ("cust-maria", "cust-other"):
        cid = agent.start(customer_ref=ref)
        agent.respond(cid, f"I was charged a fee, I am {SECRET}" if ref == "cust-maria" else "a fee")
        ops.pause(cid, reason="checking")
        ops.resume(cid)
        agent.respond(cid, "4821, 14 March 1985")
        agent.respond(cid, f"the late payment fee, {SECRET}" if ref == "cust-maria" else "the late fee")


def _reference(store: Store) -> ChainReport:
    """The ORM path over every row, sequential: the report every other path must give."""
    return verify_rows(merge_by_seq(store.iter_decisions(), store.iter_actions()), stored_policy_digests(store.engine),
                       erased_allowed(store.engine), chain_head(store.engine))


TAMPERING = {
    "intact": [],
    "edited text": ["UPDATE decision SET customer_text = 'I never said this' WHERE seq = 5"],
    "edited action": ["UPDATE operatoraction SET reason = 'nothing' WHERE seq = 8"],
    "salt removed": ["UPDATE decision SET salt = NULL WHERE seq = 10"],
    "erased unrecorded": ["UPDATE decision SET customer_text = NULL, salt = NULL, erased_at = 'x' WHERE seq = 4"],
    "deleted middle": ["DELETE FROM decision WHERE seq = 4"],
    "deleted last": ["DELETE FROM decision WHERE seq = (SELECT MAX(seq) FROM decision)"],
    "duplicate position": ["UPDATE operatoraction SET seq = 4 WHERE seq = 3"],
    "swapped": ["UPDATE decision SET seq = 100 WHERE seq = 10", "UPDATE decision SET seq = 10 WHERE seq = 11",
                "UPDATE decision SET seq = 11 WHERE seq = 100"],
    "policy digest": ["UPDATE decision SET policy_sha256 = 'f00' WHERE seq = 10"],
    "policy snapshot": ["UPDATE policyversion SET catalog_source = catalog_source || ' '"],
    "position zero": ["UPDATE decision SET seq = 0 WHERE seq = 1"],
    "number as text": ["UPDATE decision SET turn = 'two' WHERE seq = 4"],
    "forged row": "reseal",  # a row rewritten and sealed consistently, but not onto the row before it
}


def _reseal(store: Store) -> None:
    """Rewrite the decision at position 5 and seal it again, linked to a made-up previous hash."""
    from sqlmodel import Session, select

    from sopagent.store import Decision
    from sopagent.store.chain import seal

    with Session(store.engine) as session:
        row = session.exec(select(Decision).where(Decision.seq == 5)).one()
        row.customer_text = "I never said this"
        seal(row, "f" * 64, 5)
        session.add(row)
        session.commit()


@pytest.mark.parametrize("case", list(TAMPERING))
def test_bulk_reports_equal_the_reference_at_any_window_and_worker_count(card_policy, store: Store,
                                                                         case: str) -> None:
    _history(card_policy, store)
    if case == "intact":
        erase_customer(store, "cust-maria", "dpo", "GDPR request")  # erased rows, accepted
    if TAMPERING[case] == "reseal":
        _reseal(store)
    else:
        with store.engine.begin() as conn:
            for statement in TAMPERING[case]:
                conn.execute(text(statement))
    expected = _reference(store)
    assert expected.intact == (case == "intact"), expected.describe()
    for window in (1, 2, 3, 5, 1000):
        for workers in (1, 2, 3):
            assert verify_engine(store.engine, window=window, workers=workers) == expected, (window, workers)


@pytest.mark.parametrize("case", ["intact", "edited text", "duplicate position", "swapped", "forged row"])
def test_bulk_reports_equal_the_reference_on_postgresql(card_policy, postgres_url, case: str) -> None:
    store = Store(postgres_url)
    test_bulk_reports_equal_the_reference_at_any_window_and_worker_count(card_policy, store, case)


def test_erasure_on_postgresql_leaves_the_text_in_no_table(card_policy, postgres_server, postgres_url) -> None:
    store = Store(postgres_url)
    _history(card_policy, store)
    database = postgres_url.rsplit("/", 1)[1]
    assert _tables_holding(store, SECRET) and _files_holding(postgres_server, database, SECRET)
    files = _filenodes(store)
    erase_customer(store, "cust-maria", "dpo", "GDPR request 2026-114")
    changed = {table for table, node in _filenodes(store).items() if node != files[table]}
    assert changed == {"decision", "operatoraction", "conversation", "effect"}  # rewritten by VACUUM (FULL)
    assert _tables_holding(store, SECRET) == [] and _tables_holding(store, "cust-maria") == []
    assert _tables_holding(store, "the late fee")  # the other customer's text stays
    assert _files_holding(postgres_server, database, SECRET) == []  # no dead row version in a table or index file
    report = store.verify_chain()
    assert report.intact and report.checked == 12, report.describe()


def _filenodes(store: Store) -> dict[str, int]:
    """table -> the number of the file that holds it (a table rewrite gives it a new one)."""
    with store.engine.connect() as conn:
        return dict(conn.execute(text("SELECT relname, pg_relation_filenode(oid) FROM pg_class "
                                      "WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace")).all())


def _tables_holding(store: Store, needle: str) -> list[str]:
    """table.column of every text column, in every table of the database, with a value containing ``needle``."""
    found = []
    with store.engine.connect() as conn:
        columns = conn.execute(text(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public' "
            "AND data_type IN ('text', 'character varying', 'character', 'json', 'jsonb')")).all()
        assert len(columns) > 20
        for table, column in columns:
            hits = conn.execute(text(f'SELECT count(*) FROM "{table}" WHERE "{column}"::text LIKE :pattern'),
                                {"pattern": f"%{needle}%"}).scalar()
            if hits:
                found.append(f"{table}.{column}")
    return found


def _files_holding(server, database: str, needle: str) -> list[str]:
    """Files of the database's folder in the cluster that contain ``needle`` (WAL segments are elsewhere)."""
    import psycopg

    server.sql("CHECKPOINT")  # every changed page written to its file
    with psycopg.connect(f"host=127.0.0.1 port={server.port} user=postgres dbname={database}") as conn:
        oid = conn.execute("SELECT oid FROM pg_database WHERE datname = current_database()").fetchone()[0]
    folder = Path(server.data) / "base" / str(oid)
    return [p.name for p in folder.iterdir() if p.is_file() and needle.encode() in p.read_bytes()]


def test_erasure_on_postgresql_also_clears_an_unusable_model_answer(card_policy, postgres_server,
                                                                     fresh_postgres_url) -> None:
    from sopagent.errors import ModelError

    store = Store(fresh_postgres_url)
    written = '{"card_last4": "4821", "date_of_birth": "1985-02-30", "note": "' + SECRET + '"}'
    model = ScriptedModel(facts=[ModelError("the facts did not validate against Request at intent",
                                            model_output=written)])
    agent = Agent(card_policy, model, store)
    cid = agent.start(customer_ref="cust-quill", metadata={"email": "quill@example.com"})
    result = agent.respond(cid, f"{SECRET}, born 30 Feb 1985")
    assert result.status == "escalated" and SECRET not in (result.error or "")
    database = fresh_postgres_url.rsplit("/", 1)[1]
    assert _tables_holding(store, "1985-02-30") and _files_holding(postgres_server, database, SECRET)
    erase_customer(store, "cust-quill", "dpo", "GDPR request 2026-202")
    for value in (SECRET, "1985-02-30", "cust-quill", "quill@example.com"):
        assert _tables_holding(store, value) == [], value
        assert _files_holding(postgres_server, database, value) == [], value
    assert store.verify_chain().intact
