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
        f"- Every figure is the median of {meta['repeat']} runs unless it says otherwise; the "
        "baseline of a ratio is measured in the same run, on the same data.",
        "- The machine is shared: identical runs varied by up to ±20 %.",
        "",
    ]
    rows = [
        r for r in (_load(folder, f"throughput_{b}.json") for b in ("sqlite", "postgresql")) if r
    ]
    if rows:
        out += [
            "## 1. Throughput: materialize vs the database's own GROUP BY",
            "",
            "(a) `metrics-pipeline materialize` over the window — every hourly, daily and weekly "
            "partition, a fresh warehouse, an in-memory Dagster instance; (b) hand-written SQL per "
            "shard computing the same hourly aggregates inside the database (counts, failures, "
            "timeouts, response-time sums, the sketch histogram, exact p50/p95/p99; 4 shards at "
            "once, as the pipeline reads them) — the limit, written the way one writes it by hand "
            "(the status rules on every row); (b1) the pipeline's own shard statements run alone "
            "(they group by StatusCode and sketch bucket first, so the rules run once per distinct "
            "code, and return one row per biller-hour) — a - b1 is what Dagster, Python and the "
            "warehouse writes add; (b0) a counts-only GROUP BY, for scale; (c) pandas over the "
            "same rows.",
            "",
            "| shards | rows | partitions | (a) materialize | (b) SQL, same aggregates | "
            "(b1) pipeline's SQL alone | (b0) counts only | (c) pandas | a/b | "
            "target a/b ≤ 1.5 | a/b1 |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
        ]
        for r in rows:
            rps = r["rows_per_s"]
            out.append(
                f"| {r['backend']} ({r['billers']} billers × {r['days']} days × "
                f"{r['per_hour']}/h) | {r['rows']:,} | {r['partitions']:,} | "
                f"{r['materialize_s']:.1f} s ({rps['a'] / 1e3:.0f}k rows/s) | "
                f"{r['sql_s']:.1f} s ({rps['b'] / 1e3:.0f}k rows/s) | "
                f"{_seconds(r.get('pipeline_sql_s'))} | "
                f"{r['counts_sql_s']:.1f} s | {r['pandas_s']:.1f} s ({rps['c'] / 1e3:.0f}k rows/s) "
                f"| {r['ratio_a_b']:.2f} | {_verdict(r['ratio_a_b'], 1.5)} | "
                f"{_ratio(r.get('ratio_a_b1'))} |"
            )
        out += ["", "Runs (seconds, a / b / b1 / b0 / c):", ""]
        for r in rows:
            runs = r["runs"]
            b1 = runs.get("pipeline_sql") or [None] * len(runs["sql"])
            out.append(
                f"- {r['backend']}: "
                + "; ".join(
                    f"{a:.1f} / {b:.1f} / {_seconds(b1_, unit='')} / {b0:.1f} / {c:.1f}"
                    for a, b, b1_, b0, c in zip(
                        runs["materialize"],
                        runs["sql"],
                        b1,
                        runs["counts_sql"],
                        runs["pandas"],
                        strict=True,
                    )
                )
            )
        out.append("")
    ref = _load(folder, "refresh.json")
    if ref:
        out += [
            "## 2. Refresh cycle through the daemon",
            "",
            f"Every biller's running hour, day and week, from the schedule's tick to the end of "
            f"the weekly run, under the real `dagster-daemon` (Dagster instance on "
            f"{ref.get('instance', 'postgres')}, `DAGSTER_EVENT_BATCH_SIZE=1000`, queue polled "
            "every second, sensors every 2 s; light traffic in SQLite shards).",
            "",
            "| billers | wall | CPU seconds (daemon + code server + runs) | runs launched | "
            "target: < 60 s wall, runs flat |",
            "|---:|---:|---:|---:|---|",
        ]
        for n, v in ref.items():
            if n == "instance":
                continue
            out.append(
                f"| {n} | {v['wall_s']:.1f} s | {v['cpu_s']:.1f} | {v['runs']:g} | "
                f"{_verdict(v['wall_s'], 60, ' s')} |"
            )
        out.append("")
    bf = _load(folder, "backfill.json")
    if bf:
        out += [
            "## 3. Backfill at scale",
            "",
            f"{bf['billers']} billers × {bf['days']} days ({bf['hourly_partitions']:,} hourly "
            f"partitions, about {bf['partitions_about']:,} with their days and weeks; "
            f"{bf['rows']:,} calls), one Dagster backfill launched by `backlog_sensor` under the "
            f"real daemon, PostgreSQL instance, at most {bf['max_concurrent_runs']} runs at once, "
            f"watched for {bf['budget_minutes']:g} minutes (one measurement; status: "
            f"{bf['status']}).",
            "",
            "| runs finished / launched | partitions done | wall to last finished run | "
            "partitions / s | median run | CPU seconds |",
            "|---:|---:|---:|---:|---:|---:|",
            f"| {bf['runs_finished']} / {bf['runs_launched']} | {bf['partitions_done']:,} | "
            f"{bf['wall_s'] / 60:.1f} min | {bf['partitions_per_s']:.1f} | "
            f"{(bf['run_seconds_median'] or 0):.0f} s | {bf['cpu_s']:.0f} |",
            "",
        ]
    mem = _load(folder, "memory.json")
    if mem:
        out += [
            "## 4. Memory",
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
    out += ["## 5. API", ""]
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
