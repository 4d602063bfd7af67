"""`viewstore explain VIEW`: the plan in words and the generated code the engine runs."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from viewstore.cli import main
from viewstore.store import db as meta
from viewstore.store.db import Store
from viewstore.views.schema import TableInfo

PLAYERS = TableInfo.of(1, "public.players", "id int4, name text")
SCORES = TableInfo.of(
    2, "public.player_scores", "id int4, score numeric, player_id int4, created_at timestamptz"
)
VIEWS = """
CREATE MATERIALIZED VIEW player_total_scores AS
SELECT p.id AS player_id, p.name, COALESCE(SUM(s.score), 0) AS total_score
FROM players p LEFT JOIN player_scores s ON p.id = s.player_id GROUP BY p.id;

CREATE MATERIALIZED VIEW scores_by_name AS
SELECT p.name, COUNT(*) AS n, MAX(s.score) AS best
FROM player_scores s JOIN players p ON p.id = s.player_id
WHERE s.score > 0 GROUP BY p.name;

CREATE INDEX ON scores_by_name (name);

CREATE MATERIALIZED VIEW top_scores AS
SELECT s.id, s.score FROM player_scores s ORDER BY s.score DESC, s.id LIMIT 10;
"""


def _store(tmp_path: Path) -> tuple[Path, Path]:
    data = tmp_path / "data"
    with Store.open(data) as store:
        batch = store.new_batch()
        for info in (PLAYERS, SCORES):
            meta.put_table(batch, store, info)
        store.write(batch, sync=True)
    views = tmp_path / "views.sql"
    views.write_text(VIEWS)
    return data, views


def test_explain_pushed_down_view(tmp_path: Path) -> None:
    data, views = _store(tmp_path)
    result = CliRunner().invoke(
        main, ["explain", "player_total_scores", "--data", str(data), "--views", str(views)]
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert "LEFT JOIN public.player_scores s  (converts score, player_id)" in out
    assert "aggregate pushed below the join: state per s.player_id value" in out
    assert "SUM(s.score): state NumericSum" in out
    assert "sort indexes: total_score" in out
    # The generated code: created_at is never converted, the child row feeds SUM directly.
    assert "None,  # created_at: not read" in out
    assert "def child(row):" in out
    assert "row[1],  # SUM(s.score)" in out


def test_explain_general_join(tmp_path: Path) -> None:
    data, views = _store(tmp_path)
    result = CliRunner().invoke(
        main, ["explain", "scores_by_name", "--data", str(data), "--views", str(views)]
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert "rows before find their p rows: get by primary key" in out
    assert "a change here finds its s rows: join index on player_id" in out
    # name is declared, but as the single key column the rows are stored in its order already.
    assert "sort indexes: n, best" in out
    assert "def feed(row, sign):" in out
    assert "GROUP BY p.name" in out


def test_explain_top_k(tmp_path: Path) -> None:
    data, views = _store(tmp_path)
    result = CliRunner().invoke(
        main, ["explain", "top_scores", "--data", str(data), "--views", str(views)]
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert "columns: id integer, score numeric" in out
    assert (
        "ROW_NUMBER() OVER (PARTITION BY (one partition) ORDER BY s.score DESC NULLS FIRST, "
        "s.id NULLS LAST; ties by the row key)" in out
    )
    assert "Top-K: only rows whose ROW_NUMBER() <= 10 are output" in out
    assert "def project(row):" in out


def test_explain_unknown_view(tmp_path: Path) -> None:
    data, views = _store(tmp_path)
    result = CliRunner().invoke(
        main, ["explain", "nope", "--data", str(data), "--views", str(views)]
    )
    assert result.exit_code != 0
    assert "no view nope in" in result.output
    assert "player_total_scores, scores_by_name, top_scores" in result.output


def test_generated_pack_is_pack_fields() -> None:
    """The generated `pack` writes what codecs.value.pack_fields writes, whatever the values
    (the common type of each column inline, anything else through encode_value)."""
    from decimal import Decimal

    from viewstore.codecs.value import pack_fields
    from viewstore.views.plan import compile_view
    from viewstore.views.sql import parse_views

    tables = {t.qualified: t for t in (PLAYERS, SCORES)}
    plan = compile_view(parse_views(VIEWS)[0], tables)
    pack = plan.code["pack"]
    rows = [
        (1, "Mario", Decimal("1.50")),
        (2, "Peach", 0),  # COALESCE(SUM(...), 0) of a player without scores: an int
        (3, None, Decimal("NaN")),
        (4, "é\udcff", Decimal("-Infinity")),
        (None, "", Decimal("1E+3")),
    ]
    for row in rows:
        assert pack(row) == pack_fields(list(row)), row
