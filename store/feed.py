"""Subscriptions: a view's changes after an LSN, then each change as it commits.

A `Feed` turns the history into the stream that `GET /views/{name}/changes` and
`viewstore subscribe` send, one JSON object per line:

    {"lsn": "0/16B3748", "commit_time": "2026-11-21T17:00:00.123456+00:00", "diff": 1,
     "row": {"player_id": 3, "name": "Bowser", "total_score": "42.50"}}
    {"progress": "0/16B3800"}

- With `snapshot`, the stream starts with the view as of `since` (or as of now): one `diff: 1`
  line per row, at that LSN, with `"snapshot": true`. Then, snapshot or not, a progress line
  with that LSN: where the stream starts.
- Then every change committed after `since` (exclusive), in commit order: an insert is a +1, a
  delete a -1, an update a -1 of the old row and a +1 of the new, at the same LSN. Folding the
  diffs onto the snapshot gives the view at any point.
- After each step, once every change up to the applied LSN has been sent, a `progress` line
  carries that LSN: the subscriber is caught up to it. A subscriber that reconnects with
  `since=` the last progress LSN it saw gets exactly what it missed: no gap, no duplicate. (The
  LSN of a change line is as good once a later line has arrived: a transaction's lines are
  consecutive.)
- With `until`, the stream ends after the last change at or before it, with `{"end": LSN}`.

The feed reads the durable history at the subscriber's pace, so a subscriber far behind costs
no memory: each step reads at most `step_rows` changes (cut at a transaction boundary).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from viewstore.errors import ConfigError
from viewstore.history.changelog import changes, rows_as_of
from viewstore.ingest.lsn import Lsn
from viewstore.ingest.walproto import unix_us_to_datetime
from viewstore.render import json_value
from viewstore.store.db import Store
from viewstore.store.viewcatalog import ViewInfo
from viewstore.store.viewread import check_as_of, find_view

Event = dict[str, Any]


class ViewGone(ConfigError):
    """The view was dropped or rebuilt while subscribed: its history started over."""


class Feed:
    """One subscriber's position in one view's history."""

    def __init__(
        self,
        view: str,
        since: Lsn | None = None,
        *,
        snapshot: bool = False,
        until: Lsn | None = None,
        step_rows: int = 1000,
    ) -> None:
        self.view = view
        self.since = since
        self.snapshot = snapshot
        self.until = until
        self.step_rows = step_rows
        self.position: Lsn | None = None  # every change committed at or before it was sent
        self.info: ViewInfo | None = None
        self.more = False  # the last step stopped at `step_rows`: step again without waiting
        self.done = False  # `until` reached

    def start(self, store: Store) -> Iterator[Event]:
        """Check the request against the store; the snapshot lines, if asked for."""
        info = self.info = find_view(store, self.view)
        position = self.since if self.since is not None else store.applied_lsn()
        check_as_of(store, info, position)
        if self.until is not None and self.until < position:
            raise ConfigError(
                f"until {self.until} is before since {position}",
                hint="give an until at or after since (both are LSNs like 0/16B3748)",
            )
        self.position = position
        if self.snapshot:
            names = [c.name for c in info.columns]
            lsn = str(position)
            for _, row in sorted(rows_as_of(store, info.view_id, position).items()):
                yield {"lsn": lsn, "diff": 1, "row": _row(names, row), "snapshot": True}
        yield {"progress": str(position)}  # where the stream starts: a point to resume from
        if self.until is not None and position >= self.until:
            self.done = True
            yield {"end": str(position)}

    def step(self, store: Store) -> list[Event]:
        """The changes after the position, up to the applied LSN (or `until`, or `step_rows`
        changes), then a progress line; nothing when there is nothing new."""
        assert self.info is not None and self.position is not None, "start() first"
        info = self.info
        current = find_view(store, self.view)
        if current.view_id != info.view_id or current.built_at != info.built_at:
            raise ViewGone(
                f"view {self.view} was rebuilt; its history starts again at {current.built_at}",
                hint="subscribe again (with snapshot=true) to get its rows",
            )
        applied = store.applied_lsn()
        high = applied if self.until is None else min(applied, self.until)
        if high <= self.position:
            return []
        names = [c.name for c in info.columns]
        events: list[Event] = []
        reached = high
        last: Lsn | None = None
        for change in changes(store, info.view_id, self.position + 1, high):
            if len(events) >= self.step_rows and change.lsn != last:
                reached = last  # stop between transactions; the next step goes on from here
                break
            last = change.lsn
            head = {"lsn": str(change.lsn), "commit_time": _time(change.commit_time)}
            if change.before is not None:
                events.append({**head, "diff": -1, "row": _row(names, change.before)})
            if change.after is not None:
                events.append({**head, "diff": 1, "row": _row(names, change.after)})
        assert reached is not None
        self.more = reached < high
        self.position = reached
        events.append({"progress": str(reached)})
        if self.until is not None and reached >= self.until:
            self.done = True
            events.append({"end": str(self.until)})
        return events


def _row(names: list[str], row: tuple[Any, ...]) -> dict[str, Any]:
    return {n: json_value(v) for n, v in zip(names, row, strict=True)}


def _time(us: int | None) -> str | None:
    return None if us is None else unix_us_to_datetime(us).isoformat()
