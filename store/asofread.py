"""As-of reads for a time scrubber: a view's retained range, its top N as of an LSN or a time,
and the top rows' values over time (issue 15: the leaderboard page goes back in time).

The top N as of an LSN never decodes the whole view into Python: the rows as of the LSN come
from the newest checkpoint and the changes after it as two Arrow arrays (`changelog.
images_as_of`), and `toprows.top_images` decodes only the candidates for the top. At the
applied LSN the sort index answers, as for a read of the current rows.

Ordering is `viewread`'s: Postgres's defaults (DESC NULLS FIRST), ties by the view's key.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from viewstore.codecs.key import encode_key
from viewstore.codecs.value import unpack_fields
from viewstore.errors import ConfigError
from viewstore.history.changelog import images_as_of
from viewstore.history.timeline import (
    Step,
    change_after,
    change_at_or_before,
    last_change_by_time,
    row_changes,
)
from viewstore.ingest.lsn import Lsn
from viewstore.ingest.walproto import unix_us_to_datetime
from viewstore.store.db import Store
from viewstore.store.toprows import top_images
from viewstore.store.viewcatalog import ViewInfo
from viewstore.store.viewread import check_as_of, column_index, query_rows, row_count


@dataclass(frozen=True)
class HistoryRange:
    """The LSNs a view's as-of reads accept, and the commit times they stand for."""

    first_lsn: Lsn  # the view's build, or the retention cutoff
    first_reason: str  # "build" or "retention"
    first_change: Step | None  # the view's first change after first_lsn (None: none yet)
    last_lsn: Lsn  # the applied LSN
    last_time: int | None  # commit time of the last transaction applied (any table)
    marks: list[tuple[Lsn, Step | None]]  # evenly spaced LSNs, each with the view's last change


@dataclass(frozen=True)
class Position:
    """Where an as-of read stands in the view's history."""

    lsn: Lsn  # the view as of this LSN (inclusive)
    change: Step | None  # the view's last change at or before it (None: the history's start)
    previous: Lsn | None  # the view's change before that one (or its history's start)
    next: Lsn | None  # the view's first change after `lsn` (None: none up to the applied LSN)


def history_start(store: Store, info: ViewInfo) -> Lsn:
    """The first LSN the view's as-of reads accept."""
    return info.history_start or store.applied_lsn()


def history_range(store: Store, info: ViewInfo, marks: int = 10) -> HistoryRange:
    """The view's retained range: from its build (or retention cutoff) to the applied LSN,
    with `marks` + 1 evenly spaced LSNs and the view's last change at or before each (for a
    time axis under a slider over LSNs)."""
    first, last = history_start(store, info), store.applied_lsn()
    reason = "retention" if info.history_from and first == Lsn.parse(info.history_from) else "build"
    spots = sorted({Lsn(first + (last - first) * i // marks) for i in range(marks + 1)})
    return HistoryRange(
        first_lsn=first,
        first_reason=reason,
        first_change=change_after(store, info.view_id, first, last),
        last_lsn=last,
        last_time=store.applied_time(),
        marks=[(m, change_at_or_before(store, info.view_id, m, first)) for m in spots],
    )


def lsn_at_time(store: Store, info: ViewInfo, at: int) -> Lsn:
    """The LSN that stands for commit time `at` (µs since the Unix epoch): the view's last
    change committed at or before it. ConfigError when `at` is before the view's first change
    after its history's start: when that start (a build, or a retention cutoff) took place is
    not recorded, so no earlier time can be answered for exactly."""
    first, last = history_start(store, info), store.applied_lsn()
    step = last_change_by_time(store, info.view_id, at, first, last)
    if step is not None:
        return Lsn(step.lsn)
    begin = change_after(store, info.view_id, first, last)
    if begin is None:
        raise ConfigError(
            f"at {iso_time(at)}: view {info.name} has not changed since its history starts at "
            f"{first}, whose commit time is not recorded",
            hint=f"read it as of an LSN instead: as_of={first} (or any LSN up to {last})",
        )
    raise ConfigError(
        f"at {iso_time(at)}: the first commit view {info.name}'s history holds is at "
        f"{iso_time(begin.commit_time)} (LSN {Lsn(begin.lsn)})",
        hint=f"give a time at or after {iso_time(begin.commit_time)}, or as_of={first} for the "
        "view as its history starts",
    )


def position(store: Store, info: ViewInfo, lsn: Lsn) -> Position:
    """The view's last change at or before `lsn`, the one before it and the next one after."""
    first, last = history_start(store, info), store.applied_lsn()
    change = change_at_or_before(store, info.view_id, lsn, first)
    previous: Lsn | None = None
    if change is not None and change.lsn > first:
        before = change_at_or_before(store, info.view_id, change.lsn - 1, first)
        previous = first if before is None else Lsn(before.lsn)
    elif change is None and lsn > first:
        previous = first
    after = change_after(store, info.view_id, lsn, last)
    return Position(lsn, change, previous, None if after is None else Lsn(after.lsn))


def top_as_of(
    store: Store, info: ViewInfo, order_by: str, desc: bool, limit: int, lsn: Lsn
) -> tuple[list[tuple[bytes, tuple[Any, ...]]], int]:
    """(output key, row) of the first `limit` rows of the view as of `lsn` in `order_by`
    order (see the module docstring for how), and how many rows the view had then."""
    check_as_of(store, info, lsn)
    column = column_index(info, order_by)
    if lsn >= store.applied_lsn() and info.key_columns:
        rows = query_rows(store, info, None, order_by, desc, limit)
        top = [(encode_key([r[c] for c in info.key_columns]), r) for r in rows]
        return top, row_count(store, info.view_id)
    keys, images = images_as_of(store, info.view_id, lsn)
    return top_images(keys, images, column, desc, limit), len(keys)


def series(
    store: Store,
    info: ViewInfo,
    okeys: Iterable[bytes],
    order_by: str,
    lsn: Lsn,
    points: int,
) -> list[list[tuple[Lsn, int | None, Any]]]:
    """For each output key, (commit LSN, commit time, value of `order_by`; None once the row
    is deleted) of the row's changes up to `lsn`, oldest first: at most `points` of them, the
    last change in each of `points` equal spans of LSNs when there are more (the row's latest
    change always kept). Times are read once per LSN, whichever rows share it."""
    column = column_index(info, order_by)
    times: dict[int, int | None] = {}
    out = []
    for okey in okeys:
        changes = _thin(row_changes(store, info.view_id, okey, lsn), points)
        line = []
        for at, image in changes:
            if at not in times:
                step = change_at_or_before(store, info.view_id, at, at)
                times[at] = None if step is None else step.commit_time
            value = None if image is None else unpack_fields(image)[column]
            line.append((Lsn(at), times[at], value))
        out.append(line)
    return out


def _thin(changes: list[tuple[int, Any]], points: int) -> list[tuple[int, Any]]:
    """At most `points` changes: the last one in each of `points` equal LSN spans."""
    if points <= 0:
        return []
    if len(changes) <= points:
        return changes
    low, high = changes[0][0], changes[-1][0]
    width = max(1, -(-(high - low + 1) // points))
    kept: dict[int, tuple[int, Any]] = {}
    for change in changes:
        kept[(change[0] - low) // width] = change  # later ones overwrite: the span's last
    return list(kept.values())


def iso_time(us: int | None) -> str | None:
    """A commit time (µs since the Unix epoch) as ISO 8601 text in UTC, as the change stream
    prints it."""
    if us is None:
        return None
    return unix_us_to_datetime(us).isoformat()


def parse_time(text: str) -> int:
    """ISO 8601 text with a time zone (`2026-12-04T14:05:03.25Z`, `...+01:00`) as µs since the
    Unix epoch; ConfigError otherwise."""
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        at = None
    if at is None or at.tzinfo is None:
        raise ConfigError(
            f"invalid time: {text!r}",
            hint="write a time as ISO 8601 with its zone, e.g. 2026-12-04T14:05:03.25Z",
        )
    delta = at - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
