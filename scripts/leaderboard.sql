-- The leaderboard's questions over the history of the seed's view player_total_scores, as
-- DuckDB macros for `viewstore history`:
--
--   viewstore history --data DIR -f scripts/leaderboard.sql "SELECT * FROM leaders(NULL, NULL)"
--
-- or, from Python, con = viewstore.history.duckdb_copy.connect(DIR);
-- con.execute(open('scripts/leaderboard.sql').read()). The copy is opened read-only, so these
-- are TEMP macros: they last as long as the connection.
--
-- Order. The board is ordered by total_score DESC, player_id ASC: a tie goes to the lowest
-- player_id (as `viewstore demo` and Postgres's ORDER BY total_score DESC, player_id do), so a
-- rank is a position (1, 2, 3, ...; row_number(), never two players on one rank).
--
-- LSNs. An LSN is a UBIGINT: lsn('0/16B3748') reads Postgres's form, lsn_text(x) prints it.
-- "As of X" is the view after the last transaction committed at or before X. The history of
-- the view starts where it was built (its 'initial' rows, commit_time NULL) and ends at the
-- LSN the copy is synced to: an LSN outside that range is an error that says the range. In the
-- macros that take from_lsn/to_lsn, NULL means the start (from) or the end (to) of the
-- history, so the whole history is e.g. leaders(NULL, NULL); leaderboard_first_lsn() and
-- leaderboard_last_lsn() are those two LSNs.
--
-- A "transaction" below is a commit LSN at which the view changed (a transaction that did not
-- change the view is not in its history), plus the view's build LSN, where its initial rows
-- stand (commit_time and xid NULL). The history holds one change per row per transaction, its
-- net change (the store writes a transaction's changed rows once, when it ends).
--
-- Numeric totals are DOUBLE in the copy; exact values are in `viewstore query`.

-- leaderboard_first_lsn(), leaderboard_last_lsn(): the LSNs the history covers (the view's
-- build LSN, or where retention made it start; the LSN the copy is synced to).
-- Cost: one row of viewstore_sync.
CREATE OR REPLACE TEMP MACRO leaderboard_first_lsn() AS (
    SELECT history_from FROM viewstore_sync WHERE view = 'player_total_scores'
);
CREATE OR REPLACE TEMP MACRO leaderboard_last_lsn() AS (
    SELECT synced_lsn FROM viewstore_sync WHERE view = 'player_total_scores'
);

-- leaderboard_lsn(x, if_null): x checked against the history (an error outside it), or
-- if_null when x is NULL. The range macros' argument check.
CREATE OR REPLACE TEMP MACRO leaderboard_lsn(x, if_null) AS (
    SELECT CASE
        WHEN x IS NULL THEN if_null
        WHEN x < history_from THEN error('LSN ' || lsn_text(x) || ': the history of '
            || 'player_total_scores starts at ' || lsn_text(history_from))
        WHEN x > synced_lsn THEN error('LSN ' || lsn_text(x) || ': the history copy of '
            || 'player_total_scores reaches only ' || lsn_text(synced_lsn))
        ELSE x::UBIGINT
    END
    FROM viewstore_sync WHERE view = 'player_total_scores'
);

-- ranking_as_of(at_lsn): every player's rank as of an LSN.
--   SELECT * FROM ranking_as_of(lsn('0/16B3748'))
-- Cost: one pass over the history up to at_lsn (player_total_scores_as_of: the latest change
-- of each row), then a sort of the players.
CREATE OR REPLACE TEMP MACRO ranking_as_of(at_lsn) AS TABLE
    SELECT
        row_number() OVER (ORDER BY total_score DESC, player_id) AS rank,
        player_id, name, total_score
    FROM player_total_scores_as_of(at_lsn)
    ORDER BY rank;

-- top_n_as_of(at_lsn, n): the top n as of an LSN (rank, player_id, name, total_score).
--   SELECT * FROM top_n_as_of(lsn('0/16B3748'), 10)
--   SELECT * FROM top_n_as_of(leaderboard_last_lsn(), 10)      -- the board now
-- Cost: as ranking_as_of.
CREATE OR REPLACE TEMP MACRO top_n_as_of(at_lsn, n) AS TABLE
    SELECT * FROM ranking_as_of(at_lsn) WHERE rank <= n ORDER BY rank;

-- top3_at(at_time): the top 3 as of a time: after the last transaction committed at or before
-- it (a time before the first change gives the board the view was built with).
--   SELECT * FROM top3_at(TIMESTAMPTZ '2026-11-21 17:00:00+00')
-- Cost: as ranking_as_of, plus a scan of the history for the LSN of that time.
CREATE OR REPLACE TEMP MACRO top3_at(at_time) AS TABLE
    SELECT
        row_number() OVER (ORDER BY total_score DESC, player_id) AS rank,
        player_id, name, total_score
    FROM player_total_scores_at(at_time)
    ORDER BY rank
    LIMIT 3;

-- totals_over_time(): each player's total after every transaction that changed the player's
-- row (player_id, name, lsn, commit_time, total_score, op), in (player_id, lsn) order.
-- Deletes are kept and marked: op = 'delete', total_score NULL, player_id and name those the
-- player had, so a chart line ends there. A rename is a row too (same total, new name). The
-- view's initial rows are op 'initial' at its build LSN, commit_time NULL.
--   SELECT lsn_text(lsn), commit_time, total_score FROM totals_over_time() WHERE player_id = 3
-- Cost: one pass over the whole history and a sort of it.
CREATE OR REPLACE TEMP MACRO totals_over_time() AS TABLE
    SELECT
        coalesce(player_id, before_player_id) AS player_id,
        coalesce(name, before_name) AS name,
        lsn, commit_time, total_score, op
    FROM player_total_scores
    ORDER BY player_id, lsn;

-- ranks(from_lsn, to_lsn): the rank of every player present after every transaction with
-- from_lsn <= lsn <= to_lsn (lsn, commit_time, rank, player_id, name, total_score), in (lsn,
-- rank) order; deleted players are absent. NULL: the start / end of the history.
--   SELECT * FROM ranks(lsn('0/1518A38'), lsn('0/1519000')) WHERE player_id = 3
-- How: each version of a row (a change) with the LSN range it was valid in, [lsn, the row's
-- next change); the state after a transaction is the versions valid at its LSN (a range join),
-- ranked by a window per transaction.
-- Cost: O(transactions in the range × players): one row per player per transaction, plus a
-- pass over the history up to to_lsn.
CREATE OR REPLACE TEMP MACRO ranks(from_lsn, to_lsn) AS TABLE
    WITH
    bounds AS (
        SELECT
            leaderboard_lsn(from_lsn, leaderboard_first_lsn()) AS lo,
            leaderboard_lsn(to_lsn, leaderboard_last_lsn()) AS hi
    ),
    checked AS (
        SELECT lo, hi, CASE WHEN lo > hi THEN error('ranks: from_lsn ' || lsn_text(lo)
            || ' is after to_lsn ' || lsn_text(hi)) ELSE true END AS ok
        FROM bounds
    ),
    changes AS (
        SELECT h.* FROM player_total_scores h, checked c WHERE h.lsn <= c.hi AND c.ok
    ),
    transactions AS (
        SELECT lsn, any_value(commit_time) AS commit_time
        FROM changes, checked c WHERE lsn >= c.lo
        GROUP BY lsn
    ),
    versions AS (
        SELECT
            lsn AS valid_from,
            lead(lsn) OVER (PARTITION BY row_key ORDER BY lsn) AS valid_until,
            op, player_id, name, total_score
        FROM changes
    ),
    state AS (
        SELECT t.lsn, t.commit_time, v.player_id, v.name, v.total_score
        FROM transactions t
        JOIN versions v
            ON v.valid_from <= t.lsn AND (v.valid_until IS NULL OR t.lsn < v.valid_until)
        WHERE v.op <> 'delete'
    )
    SELECT
        lsn, commit_time,
        row_number() OVER (PARTITION BY lsn ORDER BY total_score DESC, player_id) AS rank,
        player_id, name, total_score
    FROM state
    ORDER BY lsn, rank;

-- leaders(from_lsn, to_lsn): the leader (rank 1) after every transaction in the range (lsn,
-- commit_time, player_id, name, total_score, changed), in lsn order; changed is true when the
-- leader is another player than after the range's previous transaction (false for the first).
-- A transaction after which the board is empty has no row. NULL: the start / end of the
-- history.
--   SELECT * FROM leaders(NULL, NULL) WHERE changed
-- Cost: as ranks (O(transactions × players)).
CREATE OR REPLACE TEMP MACRO leaders(from_lsn, to_lsn) AS TABLE
    SELECT
        lsn, commit_time, player_id, name, total_score,
        coalesce(player_id <> lag(player_id) OVER (ORDER BY lsn), false) AS changed
    FROM ranks(from_lsn, to_lsn)
    WHERE rank = 1
    ORDER BY lsn;

-- lead_changes(from_lsn, to_lsn): how many times the leader changed in the range (one row:
-- lead_changes, transactions in the range, the first and the last leader's player_id).
--   SELECT * FROM lead_changes(NULL, NULL)
-- Cost: as ranks.
CREATE OR REPLACE TEMP MACRO lead_changes(from_lsn, to_lsn) AS TABLE
    SELECT
        count(*) FILTER (WHERE changed) AS lead_changes,
        count(*) AS transactions,
        arg_min(player_id, lsn) AS first_leader,
        arg_max(player_id, lsn) AS last_leader
    FROM leaders(from_lsn, to_lsn);

-- biggest_climber(from_lsn, to_lsn): the players who gained the most positions between the
-- board as of from_lsn and as of to_lsn (player_id, name as of to_lsn, from_rank, to_rank,
-- gained, from_total, to_total); only players on both boards count, and only a gain > 0 (no
-- row when nobody climbed); several rows when several players gained as much. NULL: the
-- start / end of the history.
--   SELECT * FROM biggest_climber(lsn('0/1518A38'), NULL)
-- Cost: two ranking_as_of, i.e. a pass over the history up to to_lsn, and a join by player.
CREATE OR REPLACE TEMP MACRO biggest_climber(from_lsn, to_lsn) AS TABLE
    WITH
    a AS (
        SELECT * FROM ranking_as_of(leaderboard_lsn(from_lsn, leaderboard_first_lsn()))
    ),
    b AS (
        SELECT * FROM ranking_as_of(leaderboard_lsn(to_lsn, leaderboard_last_lsn()))
    ),
    moves AS (
        SELECT
            b.player_id, b.name,
            a.rank AS from_rank, b.rank AS to_rank, a.rank - b.rank AS gained,
            a.total_score AS from_total, b.total_score AS to_total
        FROM a JOIN b USING (player_id)
    )
    SELECT * FROM moves
    WHERE gained > 0
    QUALIFY gained = max(gained) OVER ()
    ORDER BY player_id;
