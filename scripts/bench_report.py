"""The benchmark suite's report: a table of ratios and PNG charts, from the results' JSON.

`scripts/bench` calls `report(results_dir)` after its runs (`scripts/bench --report` only this).
Every figure comes from a JSON file a benchmark wrote in that directory; a benchmark that did not
run is left out, never estimated. Writes summary.md, summary.json and charts/*.png there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def dig(data: Any, path: str) -> Any:
    """data['a']['b']... for path 'a.b...'; None when any step is missing."""
    for part in path.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def _load(out: Path, name: str) -> dict[str, Any] | None:
    path = out / name
    return json.loads(path.read_text()) if path.exists() else None


Row = dict[str, Any]  # benchmark, workload, viewstore, reference, ratio (text cells)


def _ingest(out: Path) -> list[Row]:
    rows = []
    for name in ("ingest_views.json", "ingest_views_single.json"):
        r = _load(out, name)
        if r is None or "ratio" not in r:
            continue
        rows.append(
            {
                "benchmark": "1. ingest",
                "workload": r["workload"]["description"],
                "viewstore": f"{r['viewstore']['rows_per_s']:,} rows/s",
                "reference": f"pg_recvlogical {r['reference']['rows_per_s']:,} rows/s",
                "ratio": f"{r['ratio']:.2f}",
            }
        )
    return rows


def _freshness(out: Path) -> list[Row]:
    r = _load(out, "freshness.json")
    rows: list[Row] = []
    for phase in (r or {}).get("phases", []):
        visible = phase["commit_to_visible"]
        sub = phase["commit_to_subscriber"].get("run --http", {})
        rows.append(
            {
                "benchmark": "2. freshness",
                "workload": f"{phase['rate_achieved']:,.0f} single-row txns/s "
                f"(target {phase['rate_target']:,.0f})",
                "viewstore": f"visible p50 {visible.get('p50_ms')} / p99 {visible.get('p99_ms')}"
                f" ms; subscriber p50 {sub.get('p50_ms')} / p99 {sub.get('p99_ms')} ms",
                "reference": "ksqlDB's tutorial: 'within a few seconds'",
                "ratio": "",
            }
        )
    return rows


def _maintenance(out: Path) -> list[Row]:
    r = _load(out, "maintenance.json")
    if r is None:
        return []
    us = dig(r, "catch_up_us_per_txn.views")
    rows = [
        {
            "benchmark": "3. maintenance",
            "workload": f"{r.get('scores', 0):,} scores, {r.get('players', 0):,} players",
            "viewstore": f"{us} µs per transaction",
            "reference": f"REFRESH MATERIALIZED VIEW {r.get('refresh_median_ms')} ms",
            "ratio": f"1 REFRESH = {r.get('txns_per_refresh'):,} txns",
        }
    ]
    concurrently = r.get("refresh_concurrently_median_ms")
    if concurrently is not None and us:
        rows.append(
            {
                "benchmark": "3. maintenance",
                "workload": "",
                "viewstore": "",
                "reference": f"REFRESH ... CONCURRENTLY {concurrently} ms",
                "ratio": f"1 REFRESH = {concurrently * 1000 / us:,.0f} txns",
            }
        )
    first = dig(r, "first_start_seconds.views")
    if first is not None:
        mirror = dig(r, "first_start_seconds.mirror")
        rows.append(
            {
                "benchmark": "3. first start",
                "workload": "process start to the view live: snapshot + view build",
                "viewstore": f"{first} s" + (f" (the snapshot alone {mirror} s)" if mirror else ""),
                "reference": f"REFRESH MATERIALIZED VIEW {r.get('refresh_median_ms')} ms",
                "ratio": "",
            }
        )
    trigger = dig(r, "trigger.extra_us_per_txn")
    if trigger is not None and us:
        rows.append(
            {
                "benchmark": "3. maintenance",
                "workload": "",
                "viewstore": "",
                "reference": f"summary-table trigger: +{trigger} µs on the writer's INSERT",
                "ratio": f"viewstore {us / trigger:.1f}× the trigger (off the writer's path)",
            }
        )
    return rows


def _ops(out: Path) -> list[Row]:
    rows: list[Row] = []
    snap = _load(out, "snapshot.json")
    if snap is not None and dig(snap, "viewstore.rows_per_s"):
        rows.append(
            {
                "benchmark": "4. snapshot",
                "workload": f"{dig(snap, 'workload.rows'):,} rows",
                "viewstore": f"{dig(snap, 'viewstore.rows_per_s'):,} rows/s",
                "reference": f"COPY TO STDOUT {dig(snap, 'reference.rows_per_s'):,} rows/s",
                "ratio": f"{snap.get('ratio', 0):.2f}",
            }
        )
    rec = _load(out, "recovery.json")
    for run in (rec or {}).get("runs", []):
        rows.append(
            {
                "benchmark": "6. recovery",
                "workload": run.get("description", ""),
                "viewstore": f"{run.get('caught_up_seconds')} s to caught up",
                "reference": "",
                "ratio": "",
            }
        )
    mem = _load(out, "memory.json")
    for item in (mem or {}).get("peaks", []):
        rows.append(
            {
                "benchmark": "7. memory",
                "workload": item.get("run", ""),
                "viewstore": f"peak RSS {item.get('peak_rss_mib')} MiB",
                "reference": "",
                "ratio": "",
            }
        )
    return rows


def _reads(out: Path) -> list[Row]:
    rows: list[Row] = []
    m = _load(out, "maintenance.json")
    if m is not None and m.get("reads"):
        rows.append(
            {
                "benchmark": "5. reads",
                "workload": f"the {m.get('view_rows', 0):,}-row view, open store",
                "viewstore": f"point lookup {dig(m, 'reads.point_open_store_ms')} ms, top 10 "
                f"{dig(m, 'reads.top10_open_store_ms')} ms (medians)",
                "reference": "",
                "ratio": "",
            }
        )
    h = _load(out, "history.json")
    point = dig(h, "synthetic.as_of.row_as_of")
    if point:
        rows.append(
            {
                "benchmark": "5. reads",
                "workload": f"{dig(h, 'synthetic.entries'):,} history entries",
                "viewstore": f"as-of point lookup p50 {point['p50_us']} µs, "
                f"p99 {point['p99_us']} µs",
                "reference": "",
                "ratio": "",
            }
        )
    whole = dig(h, "synthetic.as_of.rows_as_of_whole_view")
    if whole:
        rows.append(
            {
                "benchmark": "5. reads",
                "workload": f"as of an LSN, {whole['rows']:,}-row view",
                "viewstore": f"whole view {whole['median_ms']:,.0f} ms (median)",
                "reference": "",
                "ratio": "",
            }
        )
    overhead = dig(h, "ingest.slowdown_percent")
    if overhead is not None:
        rows.append(
            {
                "benchmark": "history",
                "workload": "ingest with and without history",
                "viewstore": f"{dig(h, 'ingest.with_history.rows_per_s'):,} vs "
                f"{dig(h, 'ingest.without_history.rows_per_s'):,} rows/s",
                "reference": "",
                "ratio": f"{overhead}% slower",
            }
        )
    sync = dig(h, "synthetic.full_sync.rows_per_s")
    if sync:
        rows.append(
            {
                "benchmark": "history",
                "workload": f"DuckDB sync of {dig(h, 'synthetic.full_sync.rows'):,} entries",
                "viewstore": f"{sync:,} rows/s",
                "reference": "",
                "ratio": "",
            }
        )
    export = dig(h, "synthetic.iceberg.full_export.rows_per_s")
    if export:
        rows.append(
            {
                "benchmark": "history",
                "workload": "Iceberg export of "
                f"{dig(h, 'synthetic.iceberg.full_export.rows'):,} entries",
                "viewstore": f"{export:,} rows/s, incrementally "
                f"{dig(h, 'synthetic.iceberg.incremental_export.rows_per_s'):,} rows/s",
                "reference": "",
                "ratio": "",
            }
        )
    return rows


def _table(rows: list[Row]) -> str:
    cols = ["benchmark", "workload", "viewstore", "reference", "ratio"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def _charts(out: Path) -> list[Path]:
    """Bar charts of the headline figures; the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    charts = out / "charts"
    charts.mkdir(exist_ok=True)
    written = []

    ingest = [r for n in ("ingest_views.json", "ingest_views_single.json") if (r := _load(out, n))]
    ingest = [r for r in ingest if "ratio" in r]
    if ingest:
        fig, ax = plt.subplots(figsize=(8, 4))
        labels = [r["workload"]["description"].replace(", seed view kept", "") for r in ingest]
        x = range(len(ingest))
        ax.bar([i - 0.2 for i in x], [r["reference"]["rows_per_s"] for r in ingest], 0.4,
               label="pg_recvlogical (decode + send only)")  # fmt: skip
        ax.bar([i + 0.2 for i in x], [r["viewstore"]["rows_per_s"] for r in ingest], 0.4,
               label="viewstore (mirror + seed view + history)")  # fmt: skip
        ax.set_xticks(list(x), labels, fontsize=8)
        ax.set_ylabel("rows/s")
        ax.set_yscale("log")
        ax.set_title("1. Ingest, same WAL, same run")
        ax.legend(fontsize=8)
        written.append(_save(fig, charts / "ingest.png"))

    fresh = _load(out, "freshness.json")
    if fresh and fresh.get("phases"):
        fig, ax = plt.subplots(figsize=(8, 4))
        phases = fresh["phases"]
        rates = [f"{p['rate_achieved']:,.0f}/s" for p in phases]
        series = {
            "visible (query API) p50": [p["commit_to_visible"].get("p50_ms") for p in phases],
            "visible (query API) p99": [p["commit_to_visible"].get("p99_ms") for p in phases],
            "subscriber p50": [
                p["commit_to_subscriber"].get("run --http", {}).get("p50_ms") for p in phases
            ],
            "subscriber p99": [
                p["commit_to_subscriber"].get("run --http", {}).get("p99_ms") for p in phases
            ],
        }
        width = 0.8 / len(series)
        for k, (label, values) in enumerate(series.items()):
            ax.bar([i + k * width for i in range(len(phases))], [v or 0 for v in values], width,
                   label=label)  # fmt: skip
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(phases))], rates)
        ax.set_ylabel("ms from COMMIT")
        ax.set_title("2. Freshness")
        ax.legend(fontsize=8)
        written.append(_save(fig, charts / "freshness.png"))

    m = _load(out, "maintenance.json")
    if m and dig(m, "catch_up_us_per_txn.views"):
        us = dig(m, "catch_up_us_per_txn.views")
        bars = {"viewstore, per txn": us / 1000}
        if m.get("refresh_median_ms"):
            bars["REFRESH"] = m["refresh_median_ms"]
        if m.get("refresh_concurrently_median_ms"):
            bars["REFRESH CONCURRENTLY"] = m["refresh_concurrently_median_ms"]
        if dig(m, "trigger.extra_us_per_txn"):
            bars["trigger, per INSERT"] = dig(m, "trigger.extra_us_per_txn") / 1000
        fig, ax = plt.subplots(figsize=(8, 4))
        ax.bar(list(bars), list(bars.values()))
        ax.set_yscale("log")
        ax.set_ylabel("ms")
        ax.set_title(f"3. Keeping the view current, {m.get('scores', 0):,} scores present")
        written.append(_save(fig, charts / "maintenance.png"))
    return written


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _machine(out: Path) -> str:
    for name in ("ingest_views.json", "snapshot.json", "history.json"):
        m = (_load(out, name) or {}).get("machine")
        if m:
            return "Machine: " + ", ".join(f"{k} {v}" for k, v in m.items() if v) + ".\n\n"
    return ""


def report(out: Path) -> None:
    """Print the table, and write summary.md, summary.json and the charts into `out`."""
    rows = _ingest(out) + _freshness(out) + _maintenance(out) + _ops(out) + _reads(out)
    table = _table(rows)
    print("\n" + table)
    charts = _charts(out)
    (out / "summary.json").write_text(json.dumps(rows, indent=2) + "\n")
    (out / "summary.md").write_text(
        "# viewstore benchmarks\n\n"
        + _machine(out)
        + "Each row comes from the JSON file of its benchmark in this directory (command line, "
        "workload, reference and machine recorded there); `scripts/bench --report` rebuilds "
        "this page.\n\n"
        + table
        + "\n\n"
        + "\n".join(f"![{c.stem}](charts/{c.name})" for c in charts)
        + "\n"
    )
    print(f"\nsummary: {out / 'summary.md'}; charts: {', '.join(c.name for c in charts)}")
