"""Parsing views.sql: what is accepted, its typed form, and each rejected construct's message."""

from __future__ import annotations

import pytest

from viewstore.errors import ConfigError
from viewstore.views.codegen import describe
from viewstore.views.resolve import TableShape, resolve
from viewstore.views.sql import parse_views
from viewstore.views.tree import INT4, INT8, NUMERIC, TEXT, VARCHAR, Agg, Col, Func

SEED = (
    "CREATE MATERIALIZED VIEW player_total_scores AS SELECT p.id AS player_id, p.name, "
    "COALESCE(SUM(s.score), 0) AS total_score FROM players p LEFT JOIN player_scores s "
    "ON p.id = s.player_id GROUP BY p.id;"
)
TABLES = {
    "players": TableShape([("id", INT4), ("name", TEXT), ("team_id", INT4)], ["id"]),
    "player_scores": TableShape(
        [("id", INT8), ("player_id", INT4), ("score", INT4), ("amount", NUMERIC)], ["id"]
    ),
    "teams": TableShape([("id", INT4), ("title", TEXT)], ["id"]),
}


def test_seed_view_verbatim() -> None:
    (v,) = parse_views("-- the leaderboard\n" + SEED + "\n")
    assert v.name == "player_total_scores"
    assert v.sql.startswith("SELECT p.id AS player_id") and v.sql.endswith("GROUP BY p.id")
    sel = v.select
    assert [c.name for c in sel.columns] == ["player_id", "name", "total_score"]
    assert sel.base.table == "players" and sel.base.alias == "p"
    (join,) = sel.joins
    assert join.kind == "left" and join.table.alias == "s"
    assert join.on == ((Col("p", "id"), Col("s", "player_id")),)
    assert sel.group_by == (Col("p", "id"),)
    assert v.base_tables == ("players", "player_scores")
    r = resolve(v, TABLES)
    types = [c.expr.type for c in r.columns]
    assert types == [INT4, TEXT, INT8]  # SUM(int4) is int8, and COALESCE with 0 stays int8
    total = r.columns[2].expr
    assert isinstance(total, Func) and isinstance(total.args[0], Agg)
    assert total.args[0].arg == Col("s", "score", 5, type=INT4)


def test_several_views_and_create_view() -> None:
    text = "/* two */ CREATE VIEW a AS SELECT id FROM players;\n\nCREATE VIEW b AS SELECT 1 AS x FROM teams;"
    a, b = parse_views(text)
    assert (a.name, b.name) == ("a", "b")
    assert b.sql == "SELECT 1 AS x FROM teams"


def test_three_table_chain() -> None:
    (v,) = parse_views(
        "CREATE VIEW t AS SELECT t.title, p.name, s.score FROM teams t "
        "JOIN players p ON p.team_id = t.id LEFT JOIN player_scores s ON s.player_id = p.id "
        "AND s.score = p.team_id;"
    )
    r = resolve(v, TABLES)
    assert [j.kind for j in r.joins] == ["inner", "left"]
    # Pairs are normalised to (earlier table's column, joined table's column).
    assert [(a.table, b.table) for a, b in r.joins[0].on] == [("t", "p")]
    assert [(a.index, b.index) for a, b in r.joins[1].on] == [(2, 6), (4, 7)]
    assert [t.offset for t in r.tables] == [0, 2, 5]


def test_range_cross_and_full_joins() -> None:
    """Comparisons become range terms `earlier <op> own` (BETWEEN two of them, a comma join's
    WHERE comparisons too when it has no equality); no condition is a cross join; the merged
    USING column of a FULL JOIN is COALESCE of both sides."""

    def joins(sql: str) -> list[tuple[str, list[tuple[str, str]], list[tuple[str, str, str]]]]:
        (v,) = parse_views(f"CREATE VIEW v AS {sql};")
        r = resolve(v, TABLES)
        return [
            (
                j.kind,
                [(f"{a.table}.{a.name}", f"{b.table}.{b.name}") for a, b in j.on],
                [(f"{a.table}.{a.name}", op, f"{b.table}.{b.name}") for a, op, b in j.ranges],
            )
            for j in r.joins
        ]

    assert joins("SELECT 1 FROM players p JOIN teams t ON t.id < p.team_id") == [
        ("inner", [], [("p.team_id", ">", "t.id")])
    ]
    assert joins(
        "SELECT 1 FROM players p LEFT JOIN player_scores s ON s.score BETWEEN p.id AND p.team_id"
    ) == [("left", [], [("p.id", "<=", "s.score"), ("p.team_id", ">=", "s.score")])]
    assert joins("SELECT 1 FROM players p, teams t WHERE p.id >= t.id AND p.name = 'x'") == [
        ("inner", [], [("p.id", ">=", "t.id")])
    ]
    assert joins("SELECT 1 FROM players p CROSS JOIN teams t") == [("inner", [], [])]
    assert joins("SELECT 1 FROM players p, teams t WHERE p.name = t.title") == [
        ("inner", [("p.name", "t.title")], [])
    ]
    (v,) = parse_views(
        "CREATE VIEW v AS SELECT id, count(*) FROM players p FULL JOIN teams t USING (id) "
        "GROUP BY id;"
    )
    r = resolve(v, TABLES)
    assert r.joins[0].kind == "full"
    assert describe(r.columns[0].expr) == "coalesce(p.id, t.id)"
    assert r.group_by[0] == r.columns[0].expr


def test_self_join() -> None:
    (v,) = parse_views(
        "CREATE VIEW mates AS SELECT a.name, b.name AS mate FROM players a "
        "JOIN players b ON a.team_id = b.team_id;"
    )
    r = resolve(v, TABLES)
    assert v.base_tables == ("players",)
    assert [c.expr.index for c in r.columns] == [1, 4]  # type: ignore[attr-defined]


def test_group_by_functional_dependency_and_errors() -> None:
    (v,) = parse_views(
        "CREATE VIEW x AS SELECT p.name, count(*) FROM players p GROUP BY p.team_id;"
    )
    with pytest.raises(ConfigError) as exc:
        resolve(v, TABLES)
    assert str(exc.value) == (
        'views.sql:1:25: view x: column "p.name" must appear in the GROUP BY clause or be used '
        "in an aggregate function"
    )
    (v,) = parse_views(
        "CREATE VIEW x AS SELECT lower(name), count(*) FROM players GROUP BY lower(name);"
    )
    resolve(v, TABLES)


def test_result_types() -> None:
    (v,) = parse_views(
        "CREATE VIEW x AS SELECT sum(s.id) a, avg(s.score) b, sum(s.amount) c, count(s.id) d, "
        "max(s.amount) e, s.score / 2 f, s.score + 1.5 g, s.score || 'x' h "
        "FROM player_scores s GROUP BY s.id;"
    )
    r = resolve(v, TABLES)
    assert [c.expr.type for c in r.columns] == [
        NUMERIC,
        NUMERIC,
        NUMERIC,
        INT8,
        NUMERIC,
        INT4,
        NUMERIC,
        TEXT,
    ]


def test_min_max_of_varchar_is_text_as_in_postgres() -> None:
    # pg_typeof(min(x::varchar)) is text: Postgres has no min(varchar), it uses min(text).
    (v,) = parse_views("CREATE VIEW x AS SELECT min(t.code) lo, max(t.code) hi FROM tags t;")
    r = resolve(v, {"tags": TableShape([("id", INT4), ("code", VARCHAR)], ["id"])})
    assert [c.expr.type for c in r.columns] == [TEXT, TEXT]


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        (
            "SELECT p.id FROM nope p",
            'views.sql:2:35: view v: table "nope" is not in the publication (nor a view of the file)',
        ),
        ("SELECT p.nope FROM players p", "views.sql:2:25: view v: column p.nope does not exist"),
        (
            "SELECT id FROM players a JOIN players b ON a.id = b.id",
            'views.sql:2:25: view v: column reference "id" is ambiguous',
        ),
        (
            "SELECT q.id FROM players p",
            'views.sql:2:25: view v: missing FROM-clause entry for table "q"',
        ),
        (
            "SELECT p.id FROM players p WHERE p.id",
            "views.sql:2:51: view v: argument of WHERE must be type boolean, not type integer",
        ),
        (
            "SELECT p.name + 1 FROM players p",
            "views.sql:2:25: view v: operator does not exist: text + integer",
        ),
        (
            "SELECT sum(p.name) FROM players p",
            "views.sql:2:25: view v: function sum(text) does not exist",
        ),
        (
            "SELECT p.id FROM players p WHERE p.id = 'abc'",
            'views.sql:2:51: view v: invalid input syntax for type integer: "abc"',
        ),
        (
            "SELECT 1 FROM players p JOIN teams t ON p.id < t.id + 1",
            "views.sql:2:58: view v: this join condition cannot be bounded by a sort index: a "
            "join condition is AND-ed column equalities, or comparisons (<, <=, >, >=, BETWEEN) "
            "between a column of t and a column of an earlier table",
        ),
        (
            "SELECT 1 FROM players p JOIN teams t ON p.id = t.id AND t.id > 3",
            "views.sql:2:74: view v: this join condition cannot be bounded by a sort index: a "
            "join condition is AND-ed column equalities, or comparisons (<, <=, >, >=, BETWEEN) "
            "between a column of t and a column of an earlier table",
        ),
        (
            "SELECT 1 FROM players p JOIN teams t ON p.id < t.id OR p.id > t.id",
            "views.sql:2:58: view v: this join condition cannot be bounded by a sort index: a "
            "join condition is AND-ed column equalities, or comparisons (<, <=, >, >=, BETWEEN) "
            "between a column of t and a column of an earlier table",
        ),
        (
            "SELECT 1 FROM players p JOIN teams t ON p.id NOT BETWEEN t.id AND t.id",
            "views.sql:2:58: view v: this join condition cannot be bounded by a sort index: a "
            "join condition is AND-ed column equalities, or comparisons (<, <=, >, >=, BETWEEN) "
            "between a column of t and a column of an earlier table",
        ),
        (
            "SELECT 1 FROM players p JOIN teams t ON p.name < t.id",
            "views.sql:2:58: view v: operator does not exist: text = integer",
        ),
        (
            "SELECT 1 FROM players p FULL JOIN teams t ON p.id < t.id",
            "views.sql:2:52: view v: FULL JOIN is only supported with merge-joinable or "
            "hash-joinable join conditions (as in Postgres): equalities, not comparisons",
        ),
        (
            "SELECT 1 FROM players p FULL JOIN teams t ON p.id = t.id JOIN teams u ON u.id = p.id",
            "views.sql:2:52: view v: FULL JOIN t is supported as the only join of a view "
            "(a FULL JOIN b)",
        ),
        (
            "SELECT 1 FROM players p JOIN teams t USING (title)",
            'views.sql:2:47: view v: column "title" in the join\'s USING does not exist on the left',
        ),
        (
            "SELECT 1 FROM players p JOIN teams t USING (name)",
            'views.sql:2:47: view v: column "name" in the join\'s USING is not in t',
        ),
        (
            "SELECT 1 FROM players p JOIN teams t ON p.id = t.id JOIN player_scores s USING (id)",
            'views.sql:2:75: view v: column "id" in the join\'s USING is ambiguous on the left',
        ),
    ],
)
def test_resolve_errors(sql: str, message: str) -> None:
    (v,) = parse_views(f"-- line one\nCREATE VIEW v AS {sql};")
    with pytest.raises(ConfigError) as exc:
        resolve(v, TABLES)
    assert str(exc.value) == message


REJECTED = [
    (
        "SELECT percent_rank() OVER (ORDER BY id) FROM players",
        "1:25: view v: window function percent_rank() is not supported",
    ),
    (
        "SELECT sum(id) OVER () FROM players",
        "1:25: view v: window function sum() is not supported (sum(id) OVER ())",
    ),
    (
        "SELECT id + rank() OVER (ORDER BY id) FROM players",
        "1:30: view v: window functions are supported only as a whole SELECT-list item",
    ),
    (
        "SELECT team_id, count(*) AS n, rank() OVER (ORDER BY team_id) FROM players GROUP BY team_id",
        "1:49: view v: window functions over GROUP BY or aggregates in the same SELECT are "
        "not supported",
    ),
    (
        "SELECT rank() OVER (ORDER BY id), row_number() OVER (ORDER BY name) FROM players",
        "1:52: view v: window functions of one view must share one window",
    ),
    (
        "SELECT rank() OVER w FROM players WINDOW w AS (ORDER BY id)",
        "1:52: view v: named windows",
    ),
    (
        "SELECT id FROM players WHERE id IN (SELECT id, name FROM teams)",
        "1:47: view v: subquery has too many columns",
    ),
    (
        "SELECT id FROM players WHERE id + 1 IN (SELECT id FROM teams)",
        "1:47: view v: IN (SELECT ...) is supported on a column, not on an expression",
    ),
    (
        "SELECT id FROM players p WHERE EXISTS (SELECT 1 FROM teams t WHERE t.id > p.id)",
        "1:85: view v: an EXISTS subquery may refer to the outer query only in equalities",
    ),
    (
        "SELECT id FROM players WHERE id IN (SELECT id FROM teams) OR id = 1",
        "1:47: view v: this subquery is not supported (id IN (SELECT id FROM teams))",
    ),
    ("SELECT (SELECT 1) FROM players", "1:25: view v: this subquery is not supported ((SELECT 1))"),
    (
        "SELECT id FROM players WHERE EXISTS (SELECT 1)",
        "1:47: view v: a view needs a FROM clause over published tables",
    ),
    (
        "SELECT id FROM players p JOIN LATERAL (SELECT id FROM teams t WHERE t.id = p.id) x ON true",
        "1:57: view v: LATERAL subqueries are not supported",
    ),
    (
        "SELECT id FROM (SELECT id FROM players) AS q(x)",
        "1:34: view v: column aliases on a subquery are not supported",
    ),
    (
        "SELECT id FROM players UNION SELECT id, name FROM teams",
        "1:41: view v: each UNION query must have the same number of columns",
    ),
    (
        "SELECT id FROM players UNION SELECT id FROM teams ORDER BY id",
        "1:41: view v: ORDER BY/LIMIT over a UNION is not supported",
    ),
    (
        "SELECT * FROM players UNION ALL SELECT id FROM teams",
        "1:25: view v: * in a UNION is not supported; name the columns",
    ),
    (
        "SELECT id FROM players INTERSECT SELECT id FROM teams",
        "1:41: view v: INTERSECT is not supported",
    ),
    ("SELECT id FROM players EXCEPT SELECT id FROM teams", "1:41: view v: EXCEPT is not supported"),
    (
        "SELECT id FROM players ORDER BY id",
        "1:41: view v: ORDER BY inside a view without LIMIT is not supported",
    ),
    ("SELECT id FROM players LIMIT 5", "1:41: view v: LIMIT without ORDER BY picks arbitrary rows"),
    (
        "SELECT id FROM players ORDER BY id LIMIT 5 OFFSET 5",
        "1:53: view v: OFFSET inside a view is not supported",
    ),
    (
        "SELECT id FROM players OFFSET 5",
        "1:41: view v: OFFSET inside a view is not supported",
    ),
    (
        "SELECT * FROM (SELECT id, rank() OVER (ORDER BY id) AS r FROM players) t WHERE id <= 3",
        "1:97: view v: Top-K needs WHERE on a window column of the subquery; id is not one",
    ),
    (
        "SELECT id + 1 FROM (SELECT id, rank() OVER (ORDER BY id) AS r FROM players) t "
        "WHERE r <= 3",
        "1:25: view v: over a Top-K subquery the SELECT list names the subquery's columns only",
    ),
    (
        "SELECT DISTINCT ON (id) id FROM players",
        "1:25: view v: SELECT DISTINCT ON is not supported",
    ),
    (
        "SELECT DISTINCT team_id, count(*) FROM players GROUP BY team_id",
        "1:25: view v: SELECT DISTINCT with GROUP BY or aggregates is not supported",
    ),
    (
        "WITH c AS (SELECT 1) SELECT 1 FROM c",
        "1:18: view v: WITH (common table expressions) is not supported",
    ),
    (
        "SELECT now() FROM players",
        "1:25: view v: non-deterministic function now() is not supported: a view must depend only on its tables' rows",
    ),
    (
        "SELECT random() FROM players",
        "1:25: view v: non-deterministic function random() is not supported: a view must depend only on its tables' rows",
    ),
    (
        "SELECT current_timestamp FROM players",
        "1:25: view v: non-deterministic function current_timestamp is not supported: a view must depend only on its tables' rows",
    ),
    (
        "SELECT clock_timestamp() FROM players",
        "1:25: view v: non-deterministic function clock_timestamp() is not supported: a view must depend only on its tables' rows",
    ),
    (
        "SELECT nextval('s') FROM players",
        "1:25: view v: non-deterministic function nextval() is not supported: a view must depend only on its tables' rows",
    ),
    (
        "SELECT 1 FROM players p JOIN teams t ON p.id = t.id RIGHT JOIN teams u ON u.id = p.id",
        "1:70: view v: RIGHT JOIN is supported as the first join only (a RIGHT JOIN b ...)",
    ),
    (
        "SELECT 1 FROM players p, teams t JOIN players q ON q.id = t.id",
        "1:43: view v: after a comma, FROM takes a table or a subquery; write a JOIN chain",
    ),
    ("SELECT md5(name) FROM players", "1:25: view v: function md5() is not supported"),
    ("SELECT ARRAY[1] FROM players", "1:25: view v: arrays (ARRAY[1]) is not supported"),
    (
        "SELECT id FROM players WHERE count(*) > 1",
        "1:47: view v: aggregate functions are not allowed in WHERE",
    ),
    (
        "SELECT sum(count(*)) FROM players",
        "1:29: view v: aggregate functions are not allowed in aggregate arguments (nested aggregates)",
    ),
    (
        "SELECT sum(DISTINCT id) FROM players",
        "1:25: view v: DISTINCT is supported in COUNT only, not in sum()",
    ),
    ("SELECT id::point FROM players", "1:25: view v: cast to point is not supported"),
    (
        "SELECT id FROM players GROUP BY ROLLUP (id)",
        "1:50: view v: GROUPING SETS/ROLLUP/CUBE are not supported",
    ),
]


@pytest.mark.parametrize(("sql", "message"), REJECTED)
def test_rejected(sql: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_views(f"CREATE VIEW v AS {sql};", "views.sql")
    assert str(exc.value).startswith("views.sql:" + message), str(exc.value)
    assert exc.value.hint


def test_position_is_line_and_column_in_file() -> None:
    text = (
        "CREATE VIEW ok AS SELECT id FROM players;\n"
        "-- ranks\n"
        "CREATE MATERIALIZED VIEW player_ranks AS\n"
        "  SELECT id, ntile(4) OVER (ORDER BY id) FROM players;\n"
    )
    with pytest.raises(ConfigError) as exc:
        parse_views(text, "my/views.sql")
    assert str(exc.value).startswith(
        "my/views.sql:4:14: view player_ranks: window function ntile() is not supported (ntile(4) OVER"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "CREATE TABLE t (a int);",
            "views.sql:1:1: only CREATE [MATERIALIZED] VIEW and CREATE INDEX statements are allowed, not 'CREATE TABLE t (a int)'",
        ),
        (
            "CREATE VIEW a AS SELECT 1 FROM t;\n  DROP TABLE t;",
            "views.sql:2:3: only CREATE [MATERIALIZED] VIEW and CREATE INDEX statements are allowed, not 'DROP TABLE t'",
        ),
        ("CREATE VIEW a AS SELECT 1 FRM t;", 'views.sql:1:31: syntax error at or near "t"'),
        (
            "CREATE VIEW a AS SELECT 1 FROM t; CREATE VIEW a AS SELECT 2 FROM t;",
            "views.sql:1:35: view a is defined twice",
        ),
    ],
)
def test_top_level_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_views(text)
    assert str(exc.value) == message
