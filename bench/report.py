"""The report: the budgets' rows as a markdown table (hearthlink, bare and each peer side by
side, ratios to bare, budget met or not), and the machine it ran on."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import statistics
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
Stats = dict[str, float]


def summary(values: list[float | None]) -> Stats | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {
        "median": statistics.median(vals),
        "min": min(vals),
        "max": max(vals),
        "count": len(vals),
    }


def fmt(st: Stats | None, unit: str, digits: int) -> str:
    if st is None:
        return "—"
    med, lo, hi = st["median"], st["min"], st["max"]
    if st["count"] == 1 or f"{lo:.{digits}f}" == f"{hi:.{digits}f}":
        return f"{med:.{digits}f} {unit}"
    return f"{med:.{digits}f} {unit} ({lo:.{digits}f}–{hi:.{digits}f})"


def table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def build(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    managers: list[str] = results["managers"]
    peers = [m for m in managers if m not in ("hearthlink", "bare")]
    s: dict[str, dict[str, Any]] = results["samples"]
    hl: dict[str, Any] = results.get("hearthlink_only", {})
    header = ["measure", "budget", "hearthlink", "bare", *peers, "ratio to bare", "met"]
    rows: list[list[str]] = []

    def cells(pick: Callable[[str], list[float | None]]) -> dict[str, Stats | None]:
        return {m: summary(pick(m)) for m in managers}

    def add(
        label: str,
        budget: str,
        stats: dict[str, Stats | None],
        unit: str,
        digits: int,
        limit: float | None,
        ratio: bool = True,
    ) -> None:
        base = stats.get("bare")
        ratios = []
        if ratio and base and base["median"] > 0:
            for m in ["hearthlink", *peers]:
                st = stats.get(m)
                if st:
                    ratios.append(f"{m} ×{st['median'] / base['median']:.2f}")
        h = stats.get("hearthlink")
        if limit is None or h is None:
            met = "—"
        elif h["max"] <= limit:
            met = "yes"
        else:
            met = "yes (median)" if h["median"] <= limit else "no"
        rows.append(
            [label, budget, fmt(h, unit, digits), fmt(stats.get("bare"), unit, digits)]
            + [fmt(stats.get(m), unit, digits) for m in peers]
            + ["; ".join(ratios) or "—", met]
        )

    for n in results["ns"]:
        st = {m: summary(s[m].get(f"launch_{n}", [])) for m in managers}
        bare = st.get("bare")
        add(
            f"launch → all {n} answering /health",
            "≤ bare + 0.10 s",
            st,
            "s",
            3,
            None if bare is None else bare["median"] + 0.10,
        )
    d = hl.get("default", {})
    if "skipped" in d:
        rows.append(
            [
                "default config: launch → all four healthy",
                "≤ 0.8 s",
                f"skipped: {d['skipped']}",
                "—",
                *["—"] * len(peers),
                "—",
                "—",
            ]
        )
    elif d:
        st = {"hearthlink": summary([r["healthy_s"] for r in d["runs"]])}
        add(
            "default config (`hearthlink run`): launch → all four healthy",
            "≤ 0.8 s",
            st,
            "s",
            2,
            0.8,
        )
    cli = hl.get("cli", {})
    for key, label, limit in (
        ("version_ms", "`hearthlink --version` wall time", 60.0),
        ("status_ms", "`hearthlink status` wall time (N = 4 running)", 150.0),
        ("check_ms", "`hearthlink check` wall time", None),
    ):
        if cli.get(key):
            add(
                label,
                "—" if limit is None else f"≤ {limit:g} ms",
                {"hearthlink": summary(cli[key])},
                "ms",
                0,
                limit,
            )
    crash = cells(lambda m: [c["spawned_ms"] for c in s[m].get("crash", [])])
    add(
        "SIGKILL of a service → new process spawned (N = 4)",
        "≤ 5 ms",
        crash,
        "ms",
        1,
        5.0,
        ratio=False,
    )
    crash = cells(lambda m: [c["answering_ms"] for c in s[m].get("crash", [])])
    crash["bare"] = summary([x["answering_ms"] for x in s["bare"].get("own_start", [])])
    own = crash["bare"]
    add(
        "SIGKILL of a service → new process answering (bare: the service's own start)",
        "≤ own start + 15 ms",
        crash,
        "ms",
        1,
        None if own is None else own["median"] + 15,
    )
    for n in results["ns"]:
        st = {m: summary(s[m].get(f"stop_{n}", [])) for m in managers}
        limit = 20.0 if n <= 4 else 1000.0
        add(
            f"SIGTERM of the manager → all gone, N = {n} (bare: SIGTERM to each)",
            f"≤ {limit:g} ms" if n <= 4 else "≤ 1 s",
            st,
            "ms",
            0,
            limit,
        )
    st = cells(lambda m: s[m].get("rss_4", []))
    add("manager RSS, 4 services", "≤ 36 MiB", st, "MiB", 1, 36.0, ratio=False)
    st = cells(lambda m: [s[m]["idle"]["cpu_pct"]] if "idle" in s[m] else [])
    add(
        f"manager CPU idle, {results['idle_n']} services, {results['idle_s']:g} s window",
        "≤ 1 %",
        st,
        "%",
        2,
        1.0,
        ratio=False,
    )
    if d and "runs" in d:
        per = [
            max(v for v in r["service_rss_mib"].values() if v)
            for r in d["runs"]
            if r["service_rss_mib"]
        ]
        add(
            "RSS of one default service (the largest of the four)",
            "≤ 50 MiB",
            {"hearthlink": summary(per)},
            "MiB",
            1,
            50.0,
        )
    v = hl.get("vault")
    if v:

        def one(x: float) -> Stats:
            return {"median": x, "min": x, "max": x, "count": 1}

        add(
            f"Vault /health p99, {v['writers']} writers ({v['writes_per_s']:.0f} writes/s)",
            "≤ 5 ms",
            {"hearthlink": one(v["health_load_ms"]["p99"])},
            "ms",
            2,
            5.0,
        )
        add(
            "Vault /health p50 under load / p50 idle / p99 idle",
            "—",
            {"hearthlink": one(v["health_load_ms"]["p50"])},
            "ms",
            2,
            None,
        )
        rows[-1][2] += (
            f" / {v['health_idle_ms']['p50']:.2f} ms / {v['health_idle_ms']['p99']:.2f} ms"
        )
    orph = ["SIGKILL of the manager: services / their `sleep` children alive 1 s later", "—"]
    for m in ["hearthlink", "bare", *peers]:
        o = s[m].get("orphans")
        orph.append(
            "—"
            if not o
            else f"{o['services_alive']}/{o['services']} · {o['children_alive']}/{o['children']}"
        )
    rows.append([*orph, "—", "—"])
    st = {"hearthlink": summary([x for r in s["hearthlink"].get("notice_lag_ms", []) for x in r])}
    add(
        "hearthlink: service listening → logged healthy (every start)", "≈ 50 ms", st, "ms", 0, None
    )
    return header, rows


def render(results: dict[str, Any]) -> str:
    m = results["machine"]
    header, rows = build(results)
    peers = ", ".join(
        f"{k} {v.get('version') or 'FAILED: ' + v.get('error', '?')}"
        for k, v in results["peers"].items()
    )
    parts = [
        f"hearthlink benchmark, {results['date']}: {m['cores']} cores ({m['cpu_model']}), "
        f"load {m['loadavg_at_start'][0]:.2f} at start, Python {m['python']}, commit "
        f"{results['commit']}; peers: {peers}. {results['repeats']} repeats, interleaved; "
        f"took {results['elapsed_s']:.0f} s. Median (min–max).",
        "",
        table(header, rows),
        "",
        "met: hearthlink against the budget — yes: every run; yes (median): the median only. "
        "Bare has no manager: its crash row is the service's own start (Popen → answering), "
        "its stop row SIGTERM to each service.",
        "",
        "Settings:",
        "",
        *[f"- {name}: {text}" for name, text in results.get("settings", {}).items()],
    ]
    return "\n".join(parts)


def machine() -> dict[str, Any]:
    model = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": os.getloadavg(),
        "clk_tck": os.sysconf("SC_CLK_TCK"),
    }


def commit() -> str:
    if not shutil.which("git"):
        return "?"
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no", "src"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return head + ("+dirty src" if dirty else "")
