"""Source checks: is what Postgres publishes now still what the store copied?

The mirror holds rows of particular tables: relations with an OID, columns with a type, a
typmod and an attnum, a key. pgoutput does not say when a table was dropped and created again
under the same name, when a table left the publication, when a column was rewritten in place
(`ALTER COLUMN ... TYPE ... USING`, a typmod change) or dropped and re-added, or when the key
changed. Each of those leaves rows in the mirror that Postgres no longer has, or values that
differ: silently wrong. So the store records those facts per table at the snapshot
(`TableInfo`) and compares them with the catalog here:

- at start, before streaming resumes (`check_tables`);
- while running, every few seconds and whenever a Relation message arrives again for a table
  mid-stream (the pipeline calls `check_tables` on an ordinary connection);
- on every Relation message, against the message itself (`check_relation`).

And before any of that, `check_history`: the server must be the one the store follows and must
hold everything the store applied. A server restored from a backup, recovered to an earlier
point in time or failed over to a replica that had not received everything has lost the
transactions between; new ones then take their LSNs, and a resume would skip them (their
commit LSNs are not after the applied LSN). `check_history` sees that while the server's WAL
is still behind the applied LSN; once new writes have carried it past, `ResumeCheck` sees it
in the stream: the store's last transaction is not resent where it was.

Any difference stops the pipeline before anything past the last good transaction is
acknowledged. The way out is a new snapshot; where the publication no longer includes a table
that still exists, the hint adds it back first. Checking the catalog while the stream is
behind it can stop a little early (on a change the stream has not reached yet); that is safe,
the store is right up to its applied LSN, and the same change would stop it later anyway.
"""

from __future__ import annotations

from typing import Any

from viewstore.errors import SlotError, UnsupportedError
from viewstore.ingest import setup
from viewstore.ingest.lsn import Lsn
from viewstore.ingest.pgconn import qualified, query, quote_ident
from viewstore.ingest.pgoutput import Relation
from viewstore.store.db import SourceInfo
from viewstore.views.schema import TableInfo

RESNAPSHOT = setup.RESNAPSHOT


def check_tables(
    conn: Any, publication: str, stored: dict[str, TableInfo], published: list[setup.PublishedTable]
) -> None:
    """The published tables must be the very tables the store mirrors, unchanged."""
    now = {t.qualified: t for t in published}
    added = sorted(set(now) - set(stored))
    if added:
        raise UnsupportedError(
            "the publication now includes table(s) the snapshot did not copy: " + ", ".join(added),
            hint=RESNAPSHOT,
        )
    for name in sorted(set(stored) - set(now)):
        schema, table = stored[name].schema_name, stored[name].name
        if _table_exists(conn, schema, table):
            # Changes made while it was out of the publication were never sent: adding it back
            # is not enough, it has to be copied again.
            raise UnsupportedError(
                f"table {name} left publication {publication!r} since the snapshot: changes "
                "to it since then were not sent, so the mirror of it cannot be trusted",
                hint=f"ALTER PUBLICATION {quote_ident(publication)} ADD TABLE "
                f"{qualified(schema, table)}; then {RESNAPSHOT}",
            )
        raise UnsupportedError(
            f"table {name} was dropped (it left publication {publication!r}), but the store "
            "still holds its rows",
            hint=RESNAPSHOT,
        )
    for name, info in stored.items():
        _compare(info, now[name])


def _table_exists(conn: Any, schema: str, name: str) -> bool:
    return bool(
        query(
            conn,
            "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
            (schema, name),
        )
    )


def _compare(info: TableInfo, table: setup.PublishedTable) -> None:
    name = info.qualified
    if info.oid is not None and info.oid != table.oid:
        raise UnsupportedError(
            f"table {name} was dropped and created again (relation OID {info.oid} when the "
            f"snapshot copied it, {table.oid} now): the store holds the dropped table's rows",
            hint=RESNAPSHOT,
        )
    have = [(c.name, c.type_oid) for c in info.columns]
    if have != list(table.columns):
        raise UnsupportedError(
            f"table {name} changed schema: the mirror has columns {have}, Postgres now has "
            f"{list(table.columns)}; viewstore does not follow ALTER TABLE",
            hint=RESNAPSHOT,
        )
    for col, (typmod, attnum, version) in zip(info.columns, table.attributes, strict=False):
        if col.attnum is not None and col.attnum != attnum:
            raise UnsupportedError(
                f"column {name}.{col.name} was dropped and added again (attnum {col.attnum} "
                f"when the snapshot copied it, {attnum} now): its values were replaced",
                hint=RESNAPSHOT,
            )
        if col.typmod is not None and col.typmod != typmod:
            raise UnsupportedError(
                f"column {name}.{col.name} changed type modifier ({col.typmod} when the "
                f"snapshot copied it, {typmod} now): Postgres may have rewritten its values, "
                "and a rewrite is not replicated",
                hint=RESNAPSHOT,
            )
        if col.version is not None and col.version != version:
            raise UnsupportedError(
                f"column {name}.{col.name} was altered since the snapshot (ALTER TABLE ... "
                "ALTER COLUMN): a rewrite of its values (ALTER ... TYPE ... USING) is not "
                "replicated, so the mirror of it cannot be trusted",
                hint=RESNAPSHOT,
            )
    _compare_key(info, table.replica_identity, list(table.key))


def _compare_key(info: TableInfo, replica_identity: str, key: list[str]) -> None:
    """The old rows of updates and deletes must carry the key the mirror is keyed by. A
    change between DEFAULT and FULL keeps it (FULL sends the whole old row); a new primary
    key, another identity index or NOTHING does not."""
    name = info.qualified
    if replica_identity == "n":
        raise UnsupportedError(
            f"table {name} now has REPLICA IDENTITY NOTHING: its updates and deletes arrive "
            "without a key",
            hint=f"ALTER TABLE {qualified(info.schema_name, info.name)} REPLICA IDENTITY "
            f"DEFAULT; then {RESNAPSHOT}",
        )
    if info.oid is not None and key != list(info.key):
        raise UnsupportedError(
            f"table {name} changed its key from ({', '.join(info.key)}) to "
            f"({', '.join(key)}): updates and deletes would no longer find their rows",
            hint=RESNAPSHOT,
        )


def check_relation(info: TableInfo, msg: Relation) -> None:
    """A Relation message must describe the table the mirror holds, as the snapshot saw it."""
    name = info.qualified
    if info.oid is not None and msg.oid != info.oid:
        raise UnsupportedError(
            f"table {name} was dropped and created again (relation OID {info.oid} when the "
            f"snapshot copied it, {msg.oid} in the stream): the store holds the dropped "
            "table's rows",
            hint=RESNAPSHOT,
        )
    have = [(c.name, c.type_oid) for c in info.columns]
    got = [(c.name, c.type_oid) for c in msg.columns]
    if have != got:
        raise UnsupportedError(
            f"table {name} changed schema: the mirror has columns {have}, the stream now "
            f"sends {got}; viewstore does not follow ALTER TABLE",
            hint=RESNAPSHOT,
        )
    for col, sent in zip(info.columns, msg.columns, strict=True):
        if col.typmod is not None and col.typmod != sent.typmod:
            raise UnsupportedError(
                f"column {name}.{col.name} changed type modifier ({col.typmod} when the "
                f"snapshot copied it, {sent.typmod} in the stream): Postgres may have "
                "rewritten its values, and a rewrite is not replicated",
                hint=RESNAPSHOT,
            )
    if info.replica_identity is not None:
        flagged = [c.name for c in msg.columns if c.is_key]
        if msg.replica_identity == "f":
            # Every column is flagged: the whole old row arrives, the mirror's key within it.
            key = list(info.key) if set(info.key) <= set(flagged) else flagged
        else:
            key = list(info.key) if sorted(flagged) == sorted(info.key) else flagged
        _compare_key(info, msg.replica_identity, key)


def timeline_switchpoints(history: str) -> dict[int, Lsn]:
    """Parse a timeline history file: each ancestor timeline -> the LSN where it ended."""
    out = {}
    for line in history.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0].isdigit():
            out[int(fields[0])] = Lsn.parse(fields[1])
    return out


def check_history(
    source: SourceInfo,
    applied: Lsn,
    system_id: str,
    timeline: int,
    server_lsn: Lsn,
    history: str | None,
    data_dir: object,
) -> None:
    """The server must be the store's and hold all it applied. `server_lsn` is the server's
    WAL flush position, `history` the current timeline's history file (None on timeline 1).
    A new timeline is fine when it branched off at or after the applied LSN (a promoted
    replica that had everything, a recovery that replayed all of it)."""
    if source.system_id != system_id:
        raise SlotError(
            f"the store in {data_dir} follows Postgres system {source.system_id}, "
            f"but the DSN points at system {system_id}",
            hint=f"point --dsn at the original server, or {RESNAPSHOT}",
        )
    behind = (
        "; the server was restored from a backup, recovered to an earlier point in time, or "
        "failed over to a replica that had not received everything: the transactions the "
        "store applied after that point are not in its history, and new ones take their LSNs"
    )
    if timeline != source.timeline:
        ended = timeline_switchpoints(history or "").get(source.timeline)
        if ended is None:
            raise SlotError(
                f"Postgres is on timeline {timeline}, which does not descend from timeline "
                f"{source.timeline} that the store in {data_dir} followed" + behind,
                hint=RESNAPSHOT,
            )
        if applied > ended:
            raise SlotError(
                f"Postgres is behind the store: its timeline {timeline} branched off timeline "
                f"{source.timeline} at {ended}, but the store in {data_dir} applied up to "
                f"{applied}" + behind,
                hint=RESNAPSHOT,
            )
    if server_lsn < applied:
        raise SlotError(
            f"Postgres is behind the store: its WAL ends at {server_lsn}, but the store in "
            f"{data_dir} applied up to {applied}" + behind,
            hint=RESNAPSHOT,
        )


_BEHIND = (
    "; the server was restored from a backup or recovered to an earlier point, and has taken "
    "new writes since: the transactions the store applied after that point are not in its "
    "history, and new ones took their LSNs"
)


class ResumeCheck:
    """The resumed stream must agree with the store's last transaction (commit LSN `last`, xid
    `xid`, commit time `commit_time` in µs since the Unix epoch; `applied` may be later: an idle
    position). Postgres resends from the slot's `confirmed` position; transactions whose commit
    record starts before it are not resent.

    In the server's history as the store followed it, the last transaction is resent, with its
    xid and commit time, before anything that commits later, if its commit record starts at or after
    `confirmed` (commit records hold no other record boundary, so that is `confirmed < last`);
    nothing committed between `last` and `applied` (idle positions pass no published
    transaction); and no keepalive reports a position past `last` before it is resent. A server
    restored to an earlier point whose new writes passed the applied LSN breaks one of these;
    `SlotError` then stops the pipeline before anything after `last` is applied. The commit time
    tells the transaction from one that a replay of the same statements put at the same LSN
    with the same xid (a deterministic workload after a restore does). Begin, Commit and
    keepalives only: not per row.
    """

    def __init__(
        self, last: Lsn, xid: int, commit_time: int, applied: Lsn, confirmed: Lsn | None
    ) -> None:
        self.last, self.xid, self.commit_time, self.applied = last, xid, commit_time, applied
        self.pending = confirmed is not None and confirmed < last  # to be resent, not yet seen
        self.done = False

    def begin(self, final_lsn: Lsn) -> None:
        """A Begin; `final_lsn` is where the transaction's commit record starts."""
        if final_lsn < self.last:
            return
        if self.pending:
            self._missing(f"a transaction whose commit record starts at {final_lsn} came first")
        if final_lsn < self.applied:
            raise SlotError(
                f"Postgres is behind the store: it sent a transaction whose commit record "
                f"starts at {final_lsn}, between the store's last transaction ({self.last}) "
                f"and its applied LSN ({self.applied}), where there was none" + _BEHIND,
                hint=RESNAPSHOT,
            )
        self.done = True

    def commit(self, xid: int, end_lsn: Lsn, commit_time: int) -> None:
        """A Commit of transaction `xid` ending at `end_lsn`, committed at `commit_time`."""
        if not self.pending or end_lsn < self.last:
            return
        if end_lsn == self.last and xid == self.xid and commit_time == self.commit_time:
            self.pending = False
            return
        if end_lsn == self.last and xid == self.xid:
            self._missing(f"transaction {xid} committed at {end_lsn} at another time instead")
        self._missing(f"transaction {xid} committed at {end_lsn} instead")

    def keepalive(self, wal_end: Lsn) -> None:
        """A keepalive: the server has sent everything that committed before `wal_end`."""
        if self.pending and wal_end >= self.last:
            self._missing(f"the server reports {wal_end} as sent")
        if not self.pending and wal_end >= self.applied:
            self.done = True

    def _missing(self, what: str) -> None:
        raise SlotError(
            f"Postgres is behind the store: the store's last transaction ({self.xid}, "
            f"committed at {self.last}) was not resent; {what}" + _BEHIND,
            hint=RESNAPSHOT,
        )
