"""The column-at-a-time view build (store/columnbuild.py) writes what the row path writes.

A new view of the leaderboard shape is built from whole columns: grouped with one sort, summed
in int64, every key and value encoded for all rows at once (codecs.vector). Here the same random
mirror is built three ways: views kept from the first transaction on (the incremental engine),
built row by row (store/viewbuild.py with the column path switched off), and built by columns.
The views column families must be identical key by key, and the two builds' histories too.
The data covers what the vector codecs must get right: negative and multi-digit keys, NULL and
dangling foreign keys, numerics of several scales and signs, int8 sums, NULLs everywhere,
players with no scores under LEFT and inner joins.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from viewstore.codecs import vector as V
from viewstore.codecs.key import encode_value as key_value
from viewstore.codecs.value import pack_fields
from viewstore.ingest.lsn import Lsn
from viewstore.store import columnbuild
from viewstore.store import db as meta
from viewstore.store.apply import Applier, TableState
from viewstore.store.db import Store
from viewstore.store.viewcatalog import prepare_views
from viewstore.views.plan import compile_view
from viewstore.views.schema import TableInfo
from viewstore.views.sql import parse_views

PLAYERS = TableInfo.of(1, "public.players", "id int4, name text, team text, rank int8")
SCORES = TableInfo.of(
    2, "public.player_scores", "id int4, player_id int4, score numeric, points int8, tag text"
)
VIEWS = """
CREATE MATERIALIZED VIEW player_total_scores AS
SELECT p.id AS player_id, p.name, COALESCE(SUM(s.score), 0) AS total_score
FROM players p LEFT JOIN player_scores s ON p.id = s.player_id GROUP BY p.id;

CREATE MATERIALIZED VIEW counts AS
SELECT p.id, p.rank, COUNT(*) AS joined, COUNT(s.score) AS scored, SUM(s.id) AS id_sum,
       SUM(s.points) AS points, COALESCE(SUM(s.points), -1) AS points_or
FROM players p LEFT JOIN player_scores s ON s.player_id = p.id GROUP BY p.id;

CREATE MATERIALIZED VIEW inner_totals AS
SELECT p.id, p.team, SUM(s.score) AS total, COUNT(*) AS n
FROM player_scores s JOIN players p ON p.id = s.player_id GROUP BY p.id;

CREATE INDEX ON counts (rank);
"""

Row = tuple[bytes | None, ...]


def _number(rng: random.Random) -> bytes | None:
    if rng.random() < 0.15:
        return None
    scale = rng.choice((0, 0, 1, 2, 2, 3, 6))
    value = Decimal(rng.randint(-(10 ** rng.randint(0, 9)), 10 ** rng.randint(0, 9))).scaleb(-scale)
    return format(value, "f").encode()


def _open(path: Path) -> Store:
    store = Store.open(path)
    batch = store.new_batch()
    for info in (PLAYERS, SCORES):
        meta.put_table(batch, store, info)
    store.write(batch, sync=True)
    return store


def _mirror(
    store: Store,
    seed: int,
    extra: Sequence[Row] = (),
    views: Sequence = (),
    tables: Sequence[TableInfo] = (PLAYERS, SCORES),
) -> None:
    """Random rows of both tables, applied as one transaction (keeping `views`)."""
    rng = random.Random(seed)
    applier = Applier(store, views=list(views))
    players, scores = TableState(PLAYERS), TableState(SCORES)
    applier.begin_transaction(1_700_000_000_000_000, 1000)
    ids = sorted(rng.sample(range(-30, 400), 120))
    for pid in ids if PLAYERS in tables else ():
        name = rng.choice(("mario", "peach", "bowser", "luigi", "zoë", None))
        rank = rng.choice((None, str(rng.randint(-(2**40), 2**40)).encode()))
        applier.insert(
            players,
            (str(pid).encode(), None if name is None else name.encode(), b"red", rank),
        )
    for sid in range(1, 900 if SCORES in tables else 1):
        pid = rng.choice((*ids[: len(ids) // 2], None, 999, -31))  # half the players: none
        applier.insert(
            scores,
            (
                str(sid).encode(),
                None if pid is None else str(pid).encode(),
                _number(rng),
                rng.choice((None, str(rng.randint(-(2**50), 2**50)).encode())),
                b"t",
            ),
        )
    for row in extra:
        applier.insert(scores, row)
    applier.end_transaction(Lsn(5000), 1_700_000_000_000_000)
    applier.commit_group()
    applier.close()


def _built(
    path: Path,
    seed: int,
    *,
    columns: bool,
    extra: Sequence[Row] = (),
    tables: Sequence[TableInfo] = (PLAYERS, SCORES),
) -> dict:
    store = _open(path)
    _mirror(store, seed, extra, tables=tables)
    with pytest.MonkeyPatch.context() as mp:
        if not columns:
            mp.setattr(columnbuild, "covers", lambda plan: False)
        prepare_views(store, parse_views(VIEWS))
    contents = {cf: list(getattr(store, cf).items()) for cf in ("views", "history")}
    store.close()
    return contents


def _kept(path: Path, seed: int) -> dict:
    """The views kept from before the first row: the incremental engine's state."""
    store = _open(path)
    _mirror(store, seed, views=prepare_views(store, parse_views(VIEWS)))
    contents = {cf: list(getattr(store, cf).items()) for cf in ("views", "history")}
    store.close()
    return contents


def _used(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Record what each column build returned (True: it built the view)."""
    results: list[bool] = []
    build = columnbuild.build

    def spy(*args: object) -> bool:
        results.append(build(*args))  # type: ignore[arg-type]
        return results[-1]

    monkeypatch.setattr(columnbuild, "build", spy)
    return results


def test_the_views_have_the_shape_the_column_build_covers() -> None:
    tables = {t.qualified: t for t in (PLAYERS, SCORES)}
    for d in parse_views(VIEWS):
        assert columnbuild.covers(compile_view(d, tables)), d.name


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_column_build_equals_row_build_and_kept_views(
    tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    used = _used(monkeypatch)
    by_columns = _built(tmp_path / "columns", seed, columns=True)
    assert used == [True, True, True]
    by_rows = _built(tmp_path / "rows", seed, columns=False)
    kept = _kept(tmp_path / "kept", seed)
    assert len(by_columns["views"]) > 300
    for cf in ("views", "history"):
        if by_columns[cf] != by_rows[cf]:
            diff = sorted(set(by_columns[cf]) ^ set(by_rows[cf]))[:4]
            pytest.fail(f"{cf}: the column build differs from the row build: {diff}")
    if by_columns["views"] != kept["views"]:
        diff = sorted(set(by_columns["views"]) ^ set(kept["views"]))[:4]
        pytest.fail(f"the column build differs from the kept views: {diff}")


@pytest.mark.parametrize(
    "tables", [(PLAYERS,), (SCORES,), ()], ids=["no scores", "no players", "neither"]
)
def test_column_build_of_empty_tables(
    tmp_path: Path, tables: tuple[TableInfo, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    used = _used(monkeypatch)
    by_columns = _built(tmp_path / "columns", 7, columns=True, tables=tables)
    assert used == [True, True, True]
    assert by_columns == _built(tmp_path / "rows", 7, columns=False, tables=tables)


@pytest.mark.parametrize(
    "score",
    [b"123456789012345678901234.5", b"NaN", b"Infinity"],
    ids=["25 digits", "NaN", "Infinity"],
)
def test_numbers_beyond_int64_take_the_row_path(
    tmp_path: Path, score: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = [(b"5000", b"-30", score, None, b"t")]
    used = _used(monkeypatch)
    by_columns = _built(tmp_path / "columns", 4, columns=True, extra=extra)
    assert False in used, "a numeric int64 cannot hold went through the column path"
    by_rows = _built(tmp_path / "rows", 4, columns=False, extra=extra)
    assert by_columns == by_rows


def test_a_wrong_column_encoding_is_caught_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The first groups and rows are recomputed by the row path's code before writing: break
    the vector encoding of numeric texts and the build must notice, say so, and fall back."""
    real = V.numeric_texts
    monkeypatch.setattr(V, "numeric_texts", lambda m, s: real(m + 1, s))
    used = _used(monkeypatch)
    with caplog.at_level(logging.ERROR, logger="viewstore.store.columnbuild"):
        broken = _built(tmp_path / "broken", 5, columns=True)
    assert "differs" in caplog.text
    assert used[0] is False
    monkeypatch.undo()
    by_rows = _built(tmp_path / "rows", 5, columns=False)
    assert broken == by_rows


# ---- the vector codecs against their scalar counterparts ---------------------------------


def test_vector_number_keys_equal_codecs_key() -> None:
    rng = random.Random(7)
    texts = ["0", "1", "-1", "10", "-100", "0.05", "-0.05", "0.00", "-7.10", "100.000"]
    texts += [str(2**62), str(-(2**62)), "0.000001", "99999999999999.9999"]
    for _ in range(3000):
        scale = rng.randint(0, 8)
        texts.append(format(Decimal(rng.randint(-(10**12), 10**12)).scaleb(-scale), "f"))
    got = V.key_numbers(V.binary([t.encode() for t in texts])).to_pylist()
    assert got == [key_value(Decimal(t)) for t in texts]
    ints = [0, 7, -7, 10, -10, 2**62, -(2**62)]
    got = V.key_numbers(V.binary([str(i).encode() for i in ints])).to_pylist()
    assert got == [key_value(i) for i in ints]


def test_vector_numeric_texts_equal_str_of_decimal() -> None:
    rng = random.Random(8)
    m = np.array([rng.randint(-(10**12), 10**12) for _ in range(3000)] + [0, 1, -1], np.int64)
    s = np.array([rng.randint(0, 9) for _ in range(len(m))], np.int64)
    plain = V.plain_notation(m, s)
    got = V.numeric_texts(m, s).to_pylist()
    for mi, si, p, g in zip(m.tolist(), s.tolist(), plain.tolist(), got, strict=True):
        want = str(Decimal(mi).scaleb(-si))
        assert p == ("E" not in want), (mi, si)
        if p:
            assert g == want.encode(), (mi, si)


def test_vector_pack_equals_pack_fields() -> None:
    ints = V.field_text(b"i", V.int_texts(np.array([1, -2, 30, 0])))
    texts = V.field_text(b"s", V.binary([b"a", None, "zoë".encode(), b""]))
    numerics = V.field_text(b"d", V.binary([b"1.50", b"-0.05", None, b"7"]))
    got = V.pack([ints, texts, numerics]).to_pylist()
    assert got == [
        pack_fields([1, "a", Decimal("1.50")]),
        pack_fields([-2, None, Decimal("-0.05")]),
        pack_fields([30, "zoë", None]),
        pack_fields([0, "", Decimal("7")]),
    ]


def test_column_build_in_small_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows read, encoded and written a chunk at a time (37 rows here): the history's
    sequence numbers run on across chunks, and the result is the one-chunk build's."""
    whole = _built(tmp_path / "whole", 6, columns=True)
    monkeypatch.setattr(columnbuild, "_CHUNK", 37)
    used = _used(monkeypatch)
    chunked = _built(tmp_path / "chunked", 6, columns=True)
    assert used == [True, True, True]
    assert chunked == whole
