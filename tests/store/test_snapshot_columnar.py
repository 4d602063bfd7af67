"""The columnar, parallel snapshot writes exactly the mirror bytes the row path writes (issue 14).

The row path is COPY row by row: `copytext.parse_copy_row`, then the key and `encode_row` of
`Applier.load_row`. The columnar path is `SnapshotLoad`: COPY in chunks, pyarrow's CSV reader,
the exact text path for values with a backslash, Arrow kernels for the encoding, table files
ingested into the mirror, several connections in one exported snapshot, tables cut into ranges
of pages. Both read the same exported snapshot of a real Postgres; every key and every row of
the mirror must be byte for byte the same.
"""

from __future__ import annotations

import itertools
import random
import threading
from pathlib import Path

import pytest
from helpers import pg_exec, pg_query

from viewstore.codecs.row import encode_row
from viewstore.ingest import setup
from viewstore.ingest import snapshot as ingest_snapshot
from viewstore.ingest.pgconn import ReplicationConnection, connect
from viewstore.ingest.psqlcopy import find_psql
from viewstore.ingest.snapshot import CopyPart, SnapshotReader, plan_parts
from viewstore.store.apply import TableState
from viewstore.store.db import Store, scan
from viewstore.store.snapshotload import SnapshotLoad
from viewstore.views.schema import ColumnInfo, TableInfo

TYPED = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE typed (
    id int PRIMARY KEY, b bool, by bytea, ch "char", nm name, i8 int8, i2 int2, t text,
    o oid, js json, f4 float4, f8 float8, bp char(5), vc varchar(40), d date, ts timestamp,
    tz timestamptz, n numeric, nf numeric(12, 4), u uuid, jb jsonb, arr int[], m mood
);
"""

# Every column of `typed`, as SQL literals: edge values of each type, and NULLs.
TYPED_ROWS = [
    "1, true, '\\x00ff5c0a'::bytea, 'a', 'name', 9223372036854775807, -32768, 'plain', 0, "
    "'{\"a\": [1, \"x\\\\ty\"]}', 'NaN', '-0', 'ab', 'vc', '2024-02-29', "
    "'2024-02-29 12:34:56.789012', '2024-02-29 12:34:56.789012+05:30', "
    "'1234567890123456789012345678901234567890.0000000001', 12.34, "
    "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"k\": \"v\\\\u0000x\"}', '{1,NULL,3}', 'happy'",
    "2, false, '', '\\', '', -9223372036854775808, 32767, '', 4294967295, 'null', 'Infinity', "
    "'-Infinity', '', '', 'infinity', '-infinity', 'infinity', 'NaN', -99999999.9999, "
    "'00000000-0000-0000-0000-000000000000', '[]', '{}', 'sad'",
    "3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
    "NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL",
    "4, true, 'tab\tnl\ncr\rbs\\\\', '\t', 'n\\m', 0, 0, E'tab\\there\\nnew\\rcr\\\\back\\\\N', "
    "1, '\"\\\\N\"', 1.5e-45, 2.2250738585072014e-308, 'a\\b', E'\\\\N', '0044-03-15 BC', "
    "'0044-03-15 12:00 BC', '10000-01-01 00:00+00', '1e-30', 0.0001, "
    "'ffffffff-ffff-ffff-ffff-ffffffffffff', '{\"t\": \"\\t\"}', '{{1,2},{3,4}}', 'ok'",
    "5, true, NULL, 'x', 'x', 1, 1, E'\\\\N', 2, '1', 3.4028235e38, 1.7976931348623157e308, "
    "'     ', E'ctl\\x01\\x1c\\b\\f\\v\\x7f end', '1970-01-01', '1970-01-01', "
    "'1970-01-01 00:00:00-04:56:02', '-0.5', -0.0001, NULL, NULL, NULL, NULL",
    "6, NULL, NULL, NULL, NULL, NULL, NULL, E'\\xef\\xbb\\xbfbom first, \\\\ and é ☃ 𝄞', "
    "NULL, NULL, NULL, NULL, NULL, '\"quoted\"', NULL, NULL, NULL, "
    "'100000000000000000000000000000000000000000000000000', 12.3400, NULL, NULL, NULL, NULL",
]

# More types (through the text path: int4 off the key, time, timetz, interval, inet, text[]
# with quotes and escapes, a domain) and numeric's edges: ±Infinity, 1000 fractional digits,
# 1000 integer digits, negative zero with a scale; a TOAST-sized bytea. And a table with no rows.
TYPED2 = """
CREATE DOMAIN posint AS int CHECK (VALUE > 0);
CREATE TABLE typed2 (
    id int PRIMARY KEY, i4 int4, n numeric, tm time, ttz timetz, iv interval, ip inet,
    tarr text[], dm posint, bg bytea
);
CREATE TABLE empty (id int PRIMARY KEY, v text);
INSERT INTO typed2 VALUES
    (1, 2147483647, 'Infinity', '24:00:00', '23:59:59.999999+14', '-178000000 years',
     '::ffff:1.2.3.4/128', ARRAY['a"b', 'c\\d', 'e,f', NULL, '', 'NULL', E'tab\there', '{x}'],
     1, decode(repeat(md5('x'), 8000), 'hex')),
    (2, -2147483648, '-Infinity', '00:00', '00:00-15:59', '1 mon -2 days 03:04:05.678',
     '10.0.0.0/8', '{}', 2147483647, '\\x'),
    (3, 0, ('0.' || repeat('0', 999) || '1')::numeric, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
    (4, NULL, '-0.000', NULL, NULL, '0', NULL, ARRAY[NULL]::text[], NULL, NULL),
    (5, -1, (repeat('9', 1000) || '.5')::numeric, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
"""

# The columns of the tables besides `typed`: keys of text (a byte order mark first, where the
# CSV reader would drop it), a composite key, a one-column table whose rows can be empty lines.
OTHERS = """
CREATE TABLE textkey (k text PRIMARY KEY, v text);
CREATE TABLE pair (a text, b int, v text, PRIMARY KEY (a, b));
CREATE TABLE single (t text PRIMARY KEY);
CREATE TABLE toasted (id int PRIMARY KEY, big text, small int);
CREATE TABLE wide (id int PRIMARY KEY, s text, n numeric, pad text);
"""

# Characters that COPY escapes or that CSV readers treat specially.
ALPHABET = [
    "a", "é", "☃", "\\", "\\\\", "\t", "\n", "\r", "\\N", "N", '"', "'", "#", ",", " ",
    "\x01", "\x1c", "\x7f", "\ufeff", "\b", "\f", "\v", "0",
]  # fmt: skip


def _text(rng: random.Random, longest: int = 12) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, longest)))


def _fill(dsn: str) -> None:
    pg_exec(dsn, TYPED + OTHERS + TYPED2)
    for row in TYPED_ROWS:
        pg_exec(dsn, f"INSERT INTO typed VALUES ({row})")
    rng = random.Random(14)
    with connect(dsn) as conn:
        conn.execute("INSERT INTO textkey VALUES (%s, %s)", ("\ufeffbom key", "\ufeffbom value"))
        keys = {_text(rng) for _ in range(3000)} - {"\ufeffbom key"}
        for k in sorted(keys):
            conn.execute(
                "INSERT INTO textkey VALUES (%s, %s)",
                (k, None if rng.random() < 0.1 else _text(rng, 40)),
            )
        for i in range(2000):
            conn.execute(
                "INSERT INTO pair VALUES (%s, %s, %s)",
                (_text(rng, 3) + str(i), rng.randint(-5, 5), _text(rng)),
            )
        for t in ["", "x", "\\N", "\\", "\t", "\ufeff"]:
            conn.execute("INSERT INTO single VALUES (%s)", (t,))
        # TOAST-sized values, incompressible, longer than a chunk of the columnar path.
        for i in range(1, 6):
            big = "".join(rng.choice("abcdef\\\t\n") for _ in range(300_000 * i))
            conn.execute("INSERT INTO toasted VALUES (%s, %s, %s)", (i, big, i))
        conn.execute("INSERT INTO toasted VALUES (6, NULL, NULL)")
        # Enough pages to be cut into ranges when PART_PAGES is small.
        conn.execute(
            "INSERT INTO wide SELECT g, CASE WHEN g % 7 = 0 THEN NULL ELSE 'v\\' || g END, "
            "(g * 7919 % 100000) / 100.0, repeat('p', g % 50) FROM generate_series(1, 20000) g"
        )
        conn.execute("DELETE FROM wide WHERE id % 11 = 0")  # holes in the pages


def _infos(tables: list[setup.PublishedTable]) -> list[TableInfo]:
    return [
        TableInfo(
            table_id=i + 1,
            schema_name=t.schema,
            name=t.name,
            columns=[ColumnInfo(name=c, type_oid=o) for c, o in t.columns],
            key=list(t.key),
        )
        for i, t in enumerate(tables)
    ]


def _row_path(
    reader: SnapshotReader, tables: list[setup.PublishedTable], infos: list[TableInfo]
) -> dict[bytes, bytes]:
    """What `Applier.load_row` puts for every row of the snapshot, row by row."""
    mirror: dict[bytes, bytes] = {}
    for table, info in zip(tables, infos, strict=True):
        state = TableState(info)
        for row in reader.rows(table):
            key = state.key(row)
            assert key not in mirror
            mirror[key] = encode_row(row)
    return mirror


@pytest.mark.parametrize("copy_with", ["psql", "psycopg"])
def test_columnar_snapshot_writes_the_row_paths_bytes(
    dsn: str, names, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, copy_with: str
) -> None:  # type: ignore[no-untyped-def]
    # The COPYs are read through psql when one is installed (ingest.psqlcopy), else psycopg:
    # both must give the row path's bytes.
    if copy_with == "psycopg":
        monkeypatch.setenv("VIEWSTORE_PSQL", "")
    else:
        assert find_psql() is not None, "the suite runs where Postgres's psql is installed"
        monkeypatch.delenv("VIEWSTORE_PSQL", raising=False)
    # Session defaults unlike the settings every copying connection pins (pgconn.SESSION_SETTINGS):
    # a reader that forgot one would write other text for dates, times, floats, bytea.
    db = pg_query(dsn, "SELECT current_database()")[0][0]
    for setting in ("DateStyle = 'SQL, DMY'", "TimeZone = 'Asia/Kolkata'", "extra_float_digits = 0",
                    "bytea_output = 'escape'", "IntervalStyle = 'iso_8601'"):  # fmt: skip
        pg_exec(dsn, f'ALTER DATABASE "{db}" SET {setting}')
    _fill(dsn)
    # Small chunks (a TOASTed row is longer than one) and small ranges: many of both.
    monkeypatch.setattr(ingest_snapshot, "PART_PAGES", 8)
    with connect(dsn) as conn:
        setup.ensure_publication(conn, names.publication, [])
        tables = setup.published_tables(conn, names.publication)
    assert {t.name for t in tables} >= {
        "typed", "typed2", "empty", "textkey", "pair", "single", "toasted", "wide"
    }  # fmt: skip
    infos = _infos(tables)
    repl = ReplicationConnection(dsn)
    try:
        _, snapshot_name = repl.create_slot(names.slot, temporary=True)
        # Written after the slot: in neither path.
        pg_exec(dsn, "INSERT INTO wide VALUES (100000, 'late', 1, '')")
        reader = SnapshotReader(dsn, snapshot_name)
        expected = _row_path(reader, tables, infos)
        store = Store.open(tmp_path / "store")
        try:
            load = SnapshotLoad(
                store, dsn, snapshot_name, tables, infos,
                workers=3, stop=threading.Event(), chunk_bytes=64 << 10,
            )  # fmt: skip
            assert (load.readers[0].psql is not None) == (copy_with == "psql")
            wide = [p for p in load.parts if p.table.name == "wide"]
            assert len(wide) > 2 and not any(p.whole for p in wide)
            counts = load.run()
            reader.close()
            got = dict(store.mirror.items())
            for info in infos:
                assert counts[info.table_id] == sum(1 for _ in scan(store.mirror, info.prefix))
            assert store.row_count(infos[0]) == counts[infos[0].table_id]
            rows = {info.name: counts[info.table_id] for info in infos}
            assert (rows["typed"], rows["typed2"], rows["empty"], rows["toasted"]) == (6, 5, 0, 6)
        finally:
            store.close()
    finally:
        repl.close()
    assert len(got) == len(expected) > 20_000
    assert got.keys() == expected.keys()
    different = [k for k in expected if got[k] != expected[k]]
    assert not different, f"{len(different)} rows differ, first key {different[0]!r}"
    assert got == expected
    assert not (tmp_path / "store" / "snapshot-sst").exists()


def _table(name: str) -> setup.PublishedTable:
    return setup.PublishedTable("public", name, (("id", 23),), ("id",))


def test_plan_parts_covers_every_page_once() -> None:
    big, small = _table("big"), _table("small")
    parts = plan_parts(
        [small, big], {"public.big": 10 * ingest_snapshot.PART_PAGES + 3, "public.small": 5},
        workers=2, tid_ranges=True,
    )  # fmt: skip
    assert parts[-1] == CopyPart(small)  # largest first
    ranges = sorted((p.first_page or 0, p.end_page) for p in parts if p.table is big)
    assert len(ranges) == 2 * ingest_snapshot.PARTS_PER_WORKER
    assert ranges[0][0] == 0 and ranges[-1][1] is None  # the last range is open at its end
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    sql = CopyPart(big, 0, 7).sql()
    assert sql == (
        'COPY (SELECT "id" FROM ONLY "public"."big" '
        "WHERE ctid >= '(0,0)'::tid AND ctid < '(7,0)'::tid) TO STDOUT"
    )
    # Before Postgres 14 a ctid range is a full scan per range: whole tables only.
    assert plan_parts([big], {"public.big": 10**6}, 4, tid_ranges=False) == [CopyPart(big)]
