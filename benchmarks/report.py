"""docs/benchmarks.md from benchmarks/results/*.json."""

import json
from pathlib import Path


def _load(folder: Path, name: str):
    path = folder / name
    return json.loads(path.read_text()) if path.exists() else None


def _seconds(value, unit=" s") -> str:
    return "—" if value is None else f"{value:.1f}{unit}"


def _ratio(value) -> str:
    return "—" if value is None else f"{value:.2f}"


def _verdict(value: float, target: float, unit: str = "") -> str:
    if value <= target:
        return f"met ({value:.2f}{unit} ≤ {target:g}{unit})"
    return f"**missed by {value / target - 1:.0%}** ({value:.2f}{unit} > {target:g}{unit})"


def render(folder: Path, meta: dict) -> str:
    out = [
        "# Benchmarks",
        "",
        f"- Machine: {meta['machine']}.",
        f"- Date: {meta['date']}.",
        "- Command: `make bench` (`python -m benchmarks.run_all`; one part: "
        "`python -m benchmarks.run_all --only throughput`). Raw results: `benchmarks/results/`.",
        "- Every figure is the median of the runs its section states; the baseline of a ratio "
        "is measured in the same run, on the same data, just before.",
        "- The machine is shared with other agents' builds and tests: the 1-minute load average "
        "is given next to the figures (2 vCPUs; above 2 means the benchmark waited for CPU). "
        "Sections measured at different times say so in the notes at the end.",
        "",
    ]
    five, fifty = (
        _load(folder, "throughput_sqlite_5b.json"),
        _load(folder, "throughput_sqlite_50b.json"),
    )
    rows = [r for r in (five, fifty) if r]
    if rows:
        out += [
            "## 1. Throughput: materialize vs the shards' own GROUP BY",
            "",
            "(a) `metrics-pipeline materialize` over the window — every hourly, daily and weekly "
            "partition, a fresh warehouse — **with `DAGSTER_HOME` set** to a new folder (Dagster's "
            "default SQLite instance, as `make demo` and `make dev` run it): the user's path. "
            "(b) the baseline: hand-written SQL per shard computing the same hourly aggregates "
            "inside the database (counts, failures, timeouts, response-time sums, the sketch "
            "histogram, exact p50/p95/p99; 4 shards at once, as the pipeline reads them), measured "
            "just before (a) in the same run, on the same data. (ap) the same command with a "
            "PostgreSQL instance in `DAGSTER_HOME` (as deployed), (am) with no `DAGSTER_HOME` "
            "(in-memory instance), for reference; (b1) the pipeline's own shard statements run "
            f"alone. SQLite shards, 5 shards. Median of {rows[0]['repeat']} runs (every run's "
            "figures are in the JSON).",
            "",
            "| data | rows | partitions (per asset) | (a) materialize, SQLite instance | "
            "(b) shards' SQL | a/b | target a/b ≤ 1.3 | (ap) PG instance | ap/b | "
            "(am) in-memory | am/b | (b1) pipeline SQL | load avg |",
            "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            out.append(
                f"| {r['billers']} billers × {r['days']} days × {r['per_hour']:,}/h"
                + (f" ({r['label']})" if r.get("label") else "")
                + " | "
                f"{r['rows']:,} | {r['partitions']:,} | {_seconds(r['materialize_s'])} | "
                f"{_seconds(r['sql_s'])} | {_ratio(r['ratio_a_b'])} | "
                f"{_verdict(r['ratio_a_b'], 1.3)} | "
                f"{_seconds(r.get('materialize_pg_instance_s'))} | {_ratio(r.get('ratio_ap_b'))} | "
                f"{_seconds(r.get('materialize_memory_instance_s'))} | "
                f"{_ratio(r.get('ratio_am_b'))} | {_seconds(r.get('pipeline_sql_s'))} | "
                f"{', '.join(f'{x:.1f}' for x in r['load_average_1m'])} |"
            )
        if five and fifty:
            drift = fifty["ratio_a_b"] / five["ratio_a_b"] - 1
            verdict = "met" if abs(drift) <= 0.15 else "**missed**"
            out += [
                "",
                f"Same 5.04M calls over 50 billers instead of 5: a/b {fifty['ratio_a_b']:.2f} vs "
                f"{five['ratio_a_b']:.2f}, {drift:+.0%} (target within ±15 %: {verdict}).",
            ]
        out += ["", "Dagster events written by one `materialize` (SQLite instance, by type):", ""]
        for r in rows:
            ev = r["events"]
            top = ", ".join(f"{k} {v:,}" for k, v in list(ev["by_type"].items())[:4])
            out.append(
                f"- {r['billers']} billers: {ev['events']:,} events in {ev['runs']} runs ({top})"
            )
        out.append("")
    ev = _load(folder, "events.json")
    if ev:
        counts = {k: v for k, v in ev.items() if k.isdigit()}
        out += [
            "## 2. Dagster events per run do not depend on the billers",
            "",
            f"`materialize` of the same {ev['days']} days ({ev['per_hour']} calls per biller-hour), "
            f"{ev['instance']}; rows of the instance's event log per run "
            "(`instance.all_logs(run_id)`).",
            "",
            "| billers | events | runs | events per run (job) | wall |",
            "|---:|---:|---:|---|---:|",
        ]
        for n, v in counts.items():
            per = ", ".join(f"{x['job']} {x['events']}" for x in v["per_run"])
            out.append(
                f"| {n} | {v['events']:,} | {v['runs']} | {per} | {_seconds(v['seconds'])} |"
            )
        same = len({v["events"] for v in counts.values()}) == 1
        out += ["", f"Same count at every biller count: {'met' if same else '**no**'}.", ""]
    ref = _load(folder, "refresh.json")
    if ref:
        out += [
            "## 3. Refresh cycle through the daemon",
            "",
            f"Every biller's running hour, day and week, from the schedule's tick to the end of "
            f"the weekly run, under the real `dagster-daemon` (Dagster instance on "
            f"{ref.get('instance', 'postgres')}, `DAGSTER_EVENT_BATCH_SIZE=1000`, queue polled "
            "every second, sensors every 2 s; light traffic in SQLite shards).",
            "",
            "| billers | wall | CPU seconds (daemon + code server + runs) | runs launched | "
            "Dagster events of the cycle's runs | target: < 60 s wall, runs and events flat |",
            "|---:|---:|---:|---:|---:|---|",
        ]
        for n, v in ref.items():
            if not n.isdigit():
                continue
            out.append(
                f"| {n} | {v['wall_s']:.1f} s | {v['cpu_s']:.1f} | {v['runs']:g} | "
                f"{v.get('events', '—')} | {_verdict(v['wall_s'], 60, ' s')} |"
            )
        out += ["", f"Load average (1 min) at the start: {ref.get('load_average_1m', 0):.1f}.", ""]
    variants = {
        "Dagster's defaults": "",
        "daemon with `DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS=1`": "_planned_subset",
    }
    bfs = {k: _load(folder, f"backfill{v}.json") for k, v in variants.items()}
    bfs = {k: v for k, v in bfs.items() if v}
    if bfs:
        bf = next(iter(bfs.values()))
        out += [
            "## 4. Backfill at scale",
            "",
            f"{bf['billers']} billers × {bf['days']} days with nothing written ({bf['rows']:,} "
            f"calls, {bf['hours_in_window']:,} hour partitions = {bf['biller_hours']:,} "
            "biller-hours, with their days and weeks): the backlog sensor reads the coverage "
            "ledger and launches one Dagster backfill; the real `dagster-daemon` runs it "
            f"({bf['instance']}, at most {bf['max_concurrent_runs']} runs at once). One "
            f"measurement each, watched for at most {bf['budget_minutes']:g} minutes.",
            "",
            "| daemon | status | wall (backfill created → last run ended) | target < 15 min | "
            "first run started after | runs succeeded / launched | median run | "
            "hours not covered after | daemon tree peak RSS | load avg (start, end) |",
            "|---|---|---:|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, bf in bfs.items():
            done = bf["status"].startswith("COMPLETED")
            out.append(
                f"| {name} | {bf['status']} | {bf['wall_s'] / 60:.1f} min | "
                + (
                    _verdict(bf["wall_s"] / 60, 15, " min")
                    if done
                    else f"**missed** (not done in {bf['budget_minutes']:g} min)"
                )
                + f" | {_seconds(bf['first_run_after_s'])} | {bf['runs_succeeded']} / "
                f"{bf['runs_launched']} | {_seconds(bf['run_seconds_median'])} | "
                f"{bf['hours_not_covered_after']} | {bf['daemon_tree_peak_rss_mb']:.0f} MB | "
                f"{', '.join(f'{x:.1f}' for x in bf['load_average_1m'])} |"
            )
        out.append("")
    uis = {k: _load(folder, f"ui_backfill{v}.json") for k, v in variants.items()}
    uis = {k: v for k, v in uis.items() if v}
    if uis:
        ui = next(iter(uis.values()))
        out += [
            f"## 5. A backfill launched from the UI, {ui['billers']:,} billers, PostgreSQL instance",
            "",
            f"{ui['billers']:,} billers in the catalog; `dagster-webserver` and `dagster-daemon` "
            f"on loopback ({ui['instance']}); the webserver's GraphQL `launchPartitionBackfill` "
            f"for the 3 hourly assets × {ui['hour_partitions']} hour partitions ({ui['days']} "
            "days), as the asset page's dialog sends it. The backlog sensor's tick: a direct "
            "evaluation (`resolve_sensor_def('backlog_sensor')` + `build_sensor_context`, "
            f"{ui['billers']:,} billers, default 7-day look-back, same instance), median of 3.",
            "",
            "| measure | " + " | ".join(uis) + " | target |",
            "|---|" + "---:|" * len(uis) + "---|",
        ]

        def row(label, key, target=None, unit=" s", scale=1.0, missing="**no run started**"):
            values = [u.get(key) for u in uis.values()]
            cells = " | ".join(
                "—" if v is None else (f"{v:.1f} s" if unit == " s" else f"{v:.0f} MB")
                for v in values
            )
            if target is None:
                verdict = "—"
            else:
                verdict = "; ".join(
                    missing if v is None else _verdict(v * scale, target, unit) for v in values
                )
            out.append(f"| {label} | {cells} | {verdict} |")

        row("GraphQL launch call", "graphql_launch_s")
        row("launch → first run started", "first_run_after_s", 60)
        row(
            "dagster-daemon process peak RSS",
            "daemon_process_peak_rss_mb",
            1024,
            " MB",
            missing="not measured in that run",
        )
        row(
            "daemon tree peak RSS (daemon, code servers, run workers)",
            "daemon_tree_peak_rss_mb",
            None,
            " MB",
        )
        row("webserver tree peak RSS", "webserver_tree_peak_rss_mb", None, " MB")
        row("backlog sensor tick, empty ledger", "sensor_tick_empty_ledger_s", 2)
        row("backlog sensor tick, after the backfill", "sensor_tick_after_backfill_s", 2)
        out.append("")
        for name, u in uis.items():
            out.append(
                f"- {name}: status when watching stopped {u['status']}; runs "
                f"{u['runs_succeeded']} succeeded of {u['runs']}; load average (start, end) "
                f"{', '.join(f'{x:.1f}' for x in u['load_average_1m'])}; processes at the daemon "
                "tree's peak (MB): "
                + ", ".join(f"`{k}` {v}" for k, v in u.get("daemon_tree_at_peak_mb", {}).items())
                + "."
            )
        out.append("")
    mem = _load(folder, "memory.json")
    if mem:
        out += [
            "## 6. Memory",
            "",
            f"Peak RSS of the run process (`materialize` executes its runs in-process), "
            f"{mem['billers']} billers × {mem['days']} days, same partitions, 1x and 4x the calls "
            "per hour.",
            "",
            "| data | rows | peak RSS | wall | target: flat, < 500 MB |",
            "|---|---:|---:|---:|---|",
        ]
        for k, v in mem["runs"].items():
            out.append(
                f"| {k} | {v['rows']:,} | {v['peak_rss_mb']:.0f} MB | {v['seconds']:.0f} s | "
                f"{_verdict(v['peak_rss_mb'], 500, ' MB')} |"
            )
        out.append("")
    api = folder / "api.md"
    out += ["## 7. API", ""]
    if api.exists() and api.read_text().strip():
        out += [
            "Latest `make bench` run (`benchmarks/api_load.py`, 32 connections, 30-day hourly "
            "series):",
            "",
            api.read_text().strip(),
            "",
        ]
    out += [
        "The full API load study (configurations, two runs each, what was fixed) is in "
        "[benchmarks-api.md](benchmarks-api.md).",
        "",
    ]
    notes = Path(__file__).with_name("NOTES.md")
    if notes.exists():
        out += [notes.read_text().strip(), ""]
    return "\n".join(out)
