"""Random source workloads: the transactions the mirror and crash tests drive Postgres with.

Two tables cover what the mirror must get right: `items` (REPLICA IDENTITY DEFAULT, single-column
key, many types, NULLs) and `docs` (REPLICA IDENTITY FULL, composite key, a TOASTed text column
that most updates leave unchanged). Transactions mix inserts, updates (including key changes),
deletes, both tables at once, rollbacks and the odd TRUNCATE.
"""

from __future__ import annotations

import contextlib
import random
import threading
from typing import Any

import psycopg

SCHEMA = """
CREATE TABLE items (
    id int PRIMARY KEY,
    qty int,
    price numeric,
    label text,
    ratio float8,
    flag bool,
    at timestamptz,
    day date,
    meta jsonb,
    ref uuid,
    raw bytea
);
CREATE TABLE docs (
    k1 int,
    k2 text,
    version int NOT NULL,
    body text,
    PRIMARY KEY (k1, k2)
);
ALTER TABLE docs REPLICA IDENTITY FULL;
"""

# Random hex is barely compressible, so 12 kB of it is stored out of line (TOASTed).
BIG_TEXT = "(SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 400))"

PRICES = [
    "0",
    "-1.5",
    "12345678901234567890.123456789012345678901",
    "1e-30",
    "NaN",
    "Infinity",
    "-Infinity",
    "3.14159",
    None,
]
LABELS = ["a", "tab\there", "new\nline", "back\\slash", "quote'd", "ünïcode ✓", "", None]


def _item_values(rng: random.Random) -> tuple[Any, ...]:
    maybe = lambda v: None if rng.random() < 0.15 else v  # noqa: E731
    return (
        maybe(rng.randint(-1000, 1000)),
        rng.choice(PRICES),
        rng.choice(LABELS),
        maybe(rng.choice([0.1, 1e300, -2.5, float("nan"), float("inf")])),
        maybe(rng.random() < 0.5),
        maybe(f"2024-0{rng.randint(1, 9)}-1{rng.randint(0, 9)} 12:34:56.789+0{rng.randint(0, 9)}"),
        maybe(f"20{rng.randint(10, 30)}-0{rng.randint(1, 9)}-2{rng.randint(0, 8)}"),
        maybe(f'{{"n": {rng.randint(0, 9)}, "s": "x y"}}'),
        maybe(f"{rng.getrandbits(128):032x}"),
        maybe(bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 6)))),
    )


ITEM_COLS = "qty, price, label, ratio, flag, at, day, meta, ref, raw"


def random_transaction(
    conn: psycopg.Connection[Any],
    rng: random.Random,
    key_space: int = 200,
    truncate_rate: float = 0.01,
) -> None:
    """Run one random transaction (committed, or rolled back one time in five)."""
    with conn.transaction(force_rollback=rng.random() < 0.2):
        for _ in range(rng.randint(1, 5)):
            op = rng.random()
            if op < 0.35:
                conn.execute(
                    f"INSERT INTO items (id, {ITEM_COLS}) VALUES "
                    "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
                    (rng.randrange(key_space), *_item_values(rng)),
                )
            elif op < 0.5:
                conn.execute(
                    f"UPDATE items SET ({ITEM_COLS}) = (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                    "WHERE id = %s",
                    (*_item_values(rng), rng.randrange(key_space)),
                )
            elif op < 0.57:
                # Key change: the mirror must move the row, not duplicate it.
                conn.execute(
                    "UPDATE items SET id = %s WHERE id = %s "
                    "AND NOT EXISTS (SELECT 1 FROM items WHERE id = %s)",
                    (new := rng.randrange(key_space), rng.randrange(key_space), new),
                )
            elif op < 0.65:
                conn.execute("DELETE FROM items WHERE id = %s", (rng.randrange(key_space),))
            elif op < 0.75:
                conn.execute(
                    f"INSERT INTO docs VALUES (%s, %s, 1, {BIG_TEXT}) ON CONFLICT DO NOTHING",
                    (rng.randrange(20), rng.choice("abc")),
                )
            elif op < 0.88:
                # Leaves the TOASTed body unchanged: pgoutput sends it as 'u'.
                conn.execute(
                    "UPDATE docs SET version = version + 1 WHERE k1 = %s",
                    (rng.randrange(20),),
                )
            elif op < 0.92:
                conn.execute(
                    "UPDATE docs d SET k2 = d.k2 || 'x' WHERE (k1, k2) = (SELECT k1, k2 FROM "
                    "docs WHERE k1 = %s AND length(k2) < 4 ORDER BY k2 LIMIT 1) AND NOT EXISTS "
                    "(SELECT 1 FROM docs e WHERE e.k1 = d.k1 AND e.k2 = d.k2 || 'x')",
                    (rng.randrange(20),),
                )
            elif op < 0.97:
                conn.execute("DELETE FROM docs WHERE k1 = %s", (rng.randrange(20),))
            elif rng.random() < truncate_rate * 30:
                conn.execute(rng.choice(["TRUNCATE docs", "TRUNCATE items, docs"]))


def run_transactions(dsn: str, n: int, seed: int, **kw: Any) -> None:
    rng = random.Random(seed)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for _ in range(n):
            with contextlib.suppress(psycopg.errors.DeadlockDetected):  # see SteadyLoad
                random_transaction(conn, rng, **kw)


class SteadyLoad:
    """Random transactions in a background thread until stopped (for crash tests)."""

    def __init__(self, dsn: str, seed: int, **kw: Any) -> None:
        self.dsn, self.seed, self.kw = dsn, seed, kw
        self.stop_event = threading.Event()
        self.count = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        rng = random.Random(self.seed)
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                while not self.stop_event.is_set():
                    try:
                        random_transaction(conn, rng, **self.kw)
                    except psycopg.errors.DeadlockDetected:
                        # TRUNCATE against the snapshot's COPY locks: Postgres picks a victim,
                        # and a client retries; the rolled-back transaction never happened.
                        continue
                    self.count += 1
        except BaseException as exc:
            self.error = exc

    def __enter__(self) -> SteadyLoad:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join(30)
        if self.error is not None:
            raise self.error
