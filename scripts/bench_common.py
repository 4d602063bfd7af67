"""Shared helpers of the benchmark scripts (scripts/bench_*.py): child processes measured with
wait4, CPU meters (consumer, Postgres, this script, the rest of the machine), the Postgres settings
of the runs, the machine and source identity recorded with every result. The scripts import
these from here, not each other's private helpers.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import re
import resource
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from viewstore.dsn import redact
from viewstore.errors import ViewstoreError
from viewstore.ingest.lsn import Lsn
from viewstore.pgcluster import ThrowawayPostgres

REPO = Path(__file__).resolve().parent.parent

SOURCES = ("ingest", "views", "store", "history", "serve", "viewstore")  # the code under test


POLL = 0.05  # seconds between progress polls


TIMELINE_EVERY = 1.0  # seconds between RSS/progress samples kept in the JSON


TICK = os.sysconf("SC_CLK_TCK")


# Postgres settings on top of ThrowawayPostgres's: the buffers of the performance notes' runs,
# and no autovacuum, which would otherwise vacuum player_scores while the consumers run.
PG_SETTINGS = {"autovacuum": "off", "shared_buffers": "1GB"}


class BenchError(ViewstoreError):
    """The benchmark could not run or finish; `partial` is what it measured before stopping."""

    def __init__(self, message: str, hint: str | None = None, partial: Any = None) -> None:
        super().__init__(message, hint)
        self.partial = partial


def query_lsn(conn: psycopg.Connection[Any], query: str) -> Lsn:
    row = conn.execute(query).fetchone()
    assert row is not None
    return Lsn.parse(row[0])


def redacted(argv: list[str]) -> str:
    return shlex.join(redact(a) if a.startswith("host=") else a for a in argv)


def source_state() -> dict[str, Any]:
    """The code under test: git commit, files changed since, and a hash of the sources, taken
    as viewstore starts (others edit the working tree while a long run goes on)."""
    git = subprocess.run(
        ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--", *SOURCES],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    digest = hashlib.sha256()
    for path in sorted(p for d in SOURCES for p in (REPO / d).rglob("*.py")):
        digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return {
        "git": git.stdout.strip() or None,
        "changed_files": [line[3:] for line in dirty.stdout.splitlines()],
        "sources_sha256": digest.hexdigest()[:16],
    }


def machine_info(pg: ThrowawayPostgres) -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines()
                  if ln.startswith("model name")), platform.processor())  # fmt: skip
    meminfo = Path("/proc/meminfo").read_text().split("\n", 1)[0].split()
    with psycopg.connect(pg.dsn) as conn:
        row = conn.execute("SELECT version()").fetchone()
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "mem_total_gib": round(int(meminfo[1]) / 1048576, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgres": row[0] if row else None,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


# -- processes and their resources ---------------------------------------------------------


class Child:
    """A child process reaped with wait4, so that its own CPU time and peak RSS are known."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.argv = argv
        self.log = log
        self.started = time.monotonic()
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        self.pid = self.proc.pid
        self.ended: float | None = None
        self.exit_code: int | None = None
        self.rusage: resource.struct_rusage | None = None

    def poll(self) -> bool:
        """True once the process has exited (and been reaped)."""
        if self.exit_code is not None:
            return True
        pid, status, rusage = os.wait4(self.pid, os.WNOHANG)
        if pid == 0:
            return False
        self.ended = time.monotonic()
        self.exit_code = os.waitstatus_to_exitcode(status)
        self.proc.returncode = self.exit_code  # reaped here, Popen must not wait again
        self.rusage = rusage
        return True

    def wait(self, timeout: float, interval: float = 0.005) -> int:
        deadline = time.monotonic() + timeout
        while not self.poll():
            if time.monotonic() > deadline:
                raise BenchError(f"{Path(self.argv[0]).name} did not exit within {timeout:.0f}s")
            time.sleep(interval)
        assert self.exit_code is not None
        return self.exit_code

    def signal(self, signum: int) -> None:
        if not self.poll():
            os.kill(self.pid, signum)

    def kill(self) -> None:
        """SIGKILL and reap; a no-op once the process has exited."""
        if not self.poll():
            os.kill(self.pid, signal.SIGKILL)
            self.wait(30)

    def proc_status_kib(self, field_name: str) -> int | None:
        """A `kB` field of /proc/PID/status (VmRSS, VmHWM), or None once the process is gone."""
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
        return None

    def cpu_seconds(self) -> float:
        """user + system CPU: from wait4 once reaped, else from /proc while it runs."""
        if self.rusage is not None:
            return self.rusage.ru_utime + self.rusage.ru_stime
        fields = proc_stat(self.pid)
        return 0.0 if fields is None else (int(fields[11]) + int(fields[12])) / TICK

    @property
    def max_rss_kib(self) -> int | None:
        return None if self.rusage is None else self.rusage.ru_maxrss  # KiB on Linux

    def log_tail(self, lines: int = 20) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "".join(text.splitlines(keepends=True)[-lines:])


def proc_stat(pid: int) -> list[str] | None:
    """/proc/PID/stat fields after the command name: [0] is state, [1] ppid, [11] utime..."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def cluster_cpu(postmaster: int) -> float:
    """CPU seconds used so far by a Postgres cluster: the postmaster, its reaped children
    (exited walsenders and backends land in its cutime) and its live children."""
    own = proc_stat(postmaster)
    if own is None:
        return 0.0
    ticks = sum(int(x) for x in own[11:15])
    for _, fields in children(postmaster):
        ticks += int(fields[11]) + int(fields[12])
    return ticks / TICK


def children(parent: int) -> list[tuple[int, list[str]]]:
    out = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = proc_stat(int(entry.name))
            if fields is not None and int(fields[1]) == parent:
                out.append((int(entry.name), fields))
    return out


BACKGROUND = re.compile(
    r"postgres: (checkpointer|background writer|walwriter|autovacuum launcher"
    r"|logical replication launcher|archiver|stats collector)\b"
)


def settle(postmaster: int, connections: int, timeout: float = 10.0) -> bool:
    """Wait until the cluster has at most `connections` processes other than its background
    ones (backends, walsenders, and processes still exiting): a backend that is still exiting
    at the start of a phase would otherwise land its whole CPU time in that phase, through
    the postmaster's cutime once it is reaped."""
    deadline = time.monotonic() + timeout
    while True:
        others = 0
        for pid, _ in children(postmaster):
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue  # gone, so reaped: its CPU is in the postmaster's cutime
            # An exiting process has an empty command line: it counts until it is reaped.
            others += not BACKGROUND.match(title)
        if others <= connections or time.monotonic() > deadline:
            return others <= connections
        time.sleep(0.02)


def machine_busy() -> tuple[float, float]:
    """CPU seconds the whole machine has spent busy (all cores; idle and iowait excluded), and
    of those, stolen by the hypervisor (a noisy neighbour slows every figure down)."""
    values = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / TICK, values[7] / TICK


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class CpuMeter:
    """CPU seconds of one phase, split into consumer, Postgres, this script and the rest."""

    postmaster: int
    connections: int  # this script's own connections, open throughout the phase
    start: tuple[float, ...] = ()
    settled: bool = True

    def begin(self) -> None:
        self.settled = settle(self.postmaster, self.connections)
        self.start = (cluster_cpu(self.postmaster), *machine_busy(), own_cpu())

    def end(self, seconds: float, consumer: float, profiler: float = 0.0) -> dict[str, Any]:
        # The consumer has exited; its walsender follows within moments.
        self.settled &= settle(self.postmaster, self.connections)
        now = (cluster_cpu(self.postmaster), *machine_busy(), own_cpu())
        pg, busy, steal, mine = (b - a for b, a in zip(now, self.start, strict=True))
        other = busy - steal - pg - consumer - mine - profiler
        return {
            "consumer_s": round(consumer, 3),
            "postgres_s": round(pg, 3),
            "bench_script_s": round(mine, 3),
            "profiler_s": round(profiler, 3),
            "other_s": round(max(other, 0.0), 3),
            "machine_busy_s": round(busy, 3),
            "steal_s": round(steal, 3),
            "consumer_cores": round(consumer / seconds, 2) if seconds else 0.0,
            "postgres_cores": round(pg / seconds, 2) if seconds else 0.0,
            "settled": self.settled,
        }
