"""Transactions: decoded pgoutput messages in, committed transactions out, in commit order; no I/O.

pgoutput sends each committed transaction whole and in commit order: Begin, its messages
(Insert, Update, Delete, Truncate, with Relation, Type, Origin and Message among them), Commit.
Keepalives ('k' frames) come between any two messages. `Assembler` keeps the state between them
that applying every transaction exactly once needs:

- The skip rule. After a crash or a reconnect the slot resends from the synced LSN, so a
  transaction the store has applied already can arrive again. A transaction whose commit LSN
  (the end of its commit record) is not after the applied LSN is skipped; on the wire that is a
  Begin whose `final_lsn` (where its commit record starts) is before the applied LSN.
- Keepalives. `received` is the highest WAL position the server has reported (a keepalive's or
  a commit LSN); `idle_pos` is, between transactions, the position the store may record as
  progress while only tables it does not publish are written.
- The large-transaction read-ahead. A transaction found too large for one group (the caller
  raises while applying its rows) is read on to its Commit without applying anything: the end
  of its commit record is its commit LSN, which keys its history. It is then recorded in
  `large` (Begin's final_lsn -> commit LSN) and the caller's exception raised again, so that a
  replay from the synced LSN applies it from its Begin, in chunks.

Row messages are the hot path: the pipeline hands them to the applier itself, unless `skip`.
What is left to the caller: reading the stream, applying, group commit, feedback. `assemble`
runs the same state machine over whole CopyData frames and collects each transaction it would
apply, for tests on recorded bytes and for reading a stream by hand.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from viewstore.errors import DecodeError
from viewstore.ingest.lsn import Lsn
from viewstore.ingest.pgoutput import Begin, Commit, Delete, Insert, Truncate, Update, decode
from viewstore.ingest.walproto import Keepalive, decode_copy_data

XLOGDATA_HEADER = 25  # 'w', dataStart, walEnd, sendTime: then the pgoutput message
ROWS = (Insert, Update, Delete, Truncate)


class Assembler:
    """The transaction state of one replication stream (see the module docstring).

    `large` is shared by the streams of one pipeline: a transaction found too large on one
    connection is applied in chunks when the next one resends it.
    """

    def __init__(self, received: Lsn, large: dict[Lsn, Lsn] | None = None) -> None:
        self.in_txn = False
        self.skip = False  # the current transaction's rows are not to be applied
        self.final_lsn = Lsn(0)  # where the commit record of the transaction being received starts
        self.xid = 0  # ... and its transaction id
        self.received = received
        self.keepalive_pos = Lsn(0)  # the last keepalive's position
        self.idle_pos: Lsn | None = None
        self.large: dict[Lsn, Lsn] = {} if large is None else large
        self.skipped = 0  # transactions resent and skipped (tests read it)
        self._too_large: BaseException | None = None

    def keepalive(self, data: bytes) -> bool:
        """A CopyData message that is not XLogData: a keepalive (DecodeError otherwise).
        True when the server asks for a status update now."""
        frame = decode_copy_data(data)
        if type(frame) is not Keepalive:
            raise DecodeError(f"empty XLogData message at {frame.wal_end}")
        if frame.wal_end > self.received:
            self.received = frame.wal_end
        self.keepalive_pos = frame.wal_end
        if not self.in_txn:
            self.idle_pos = frame.wal_end
        return frame.reply_requested

    def begin(self, msg: Begin, applied_lsn: Lsn) -> Lsn | None:
        """A transaction starts. Returns its commit LSN when it is to be applied and is known
        to be large (read ahead on an earlier connection): the caller makes what precedes it
        durable, then applies it in chunks."""
        self.idle_pos = None
        # Already applied before a crash or reconnect: the slot may resend it.
        self.skip = msg.final_lsn < applied_lsn
        self.skipped += self.skip
        self.final_lsn = msg.final_lsn
        self.xid = msg.xid
        self.in_txn = True
        return None if self.skip else self.large.get(msg.final_lsn)

    def read_ahead(self, exc: BaseException) -> None:
        """The current transaction is too large for one group: read on to its Commit without
        applying, then raise `exc` (see `commit`)."""
        self.skip = True
        self._too_large = exc

    def commit(self, msg: Commit) -> bool:
        """A transaction ends; True when it is to be applied (its rows were, unless `skip`).

        After `read_ahead`, records the transaction in `large` and raises the exception given
        there instead."""
        if self._too_large is not None:
            self.large[self.final_lsn] = msg.end_lsn
            raise self._too_large
        self.in_txn = False
        if msg.end_lsn > self.received:
            self.received = msg.end_lsn
        apply = not self.skip
        self.skip = False
        return apply


@dataclass(frozen=True)
class Transaction:
    """A committed transaction to apply: its Begin, its messages in stream order, its Commit."""

    begin: Begin
    messages: tuple[object, ...]
    commit: Commit

    @property
    def commit_lsn(self) -> Lsn:
        """The end of its commit record: the LSN its changes are recorded under."""
        return self.commit.end_lsn


def assemble(
    frames: Iterable[bytes],
    applied_lsn: Lsn,
    assembler: Assembler | None = None,
    *,
    max_rows: int | None = None,
) -> Iterator[Transaction]:
    """The transactions to apply from whole CopyData frames ('w' and 'k'), in commit order.

    Transactions whose commit LSN is not after `applied_lsn` are skipped; as each transaction
    is yielded, the applied LSN moves to its commit LSN. With `max_rows`, a transaction with
    more rows is read ahead as the pipeline does, and `TooLarge` raised at its Commit."""
    asm = assembler if assembler is not None else Assembler(applied_lsn)
    begin: Begin | None = None
    messages: list[object] = []
    rows = 0
    for data in frames:
        if not (data[0] == 0x77 and len(data) > XLOGDATA_HEADER):
            asm.keepalive(data)
            continue
        msg = decode(data[XLOGDATA_HEADER:])
        cls = type(msg)
        if cls is Begin:
            asm.begin(msg, applied_lsn)
            begin, messages, rows = msg, [], 0
        elif cls is Commit:
            assert begin is not None, "Commit without Begin"
            if asm.commit(msg):
                applied_lsn = msg.end_lsn
                yield Transaction(begin, tuple(messages), msg)
            begin = None
        elif cls not in ROWS:
            messages.append(msg)  # Relation, Type, Origin, Message
        elif not asm.skip:
            rows += 1
            if max_rows is not None and rows > max_rows:
                asm.read_ahead(TooLarge(rows))
            else:
                messages.append(msg)


class TooLarge(Exception):
    """`assemble`'s stand-in for the applier's LargeTransaction: more rows than `max_rows`."""
