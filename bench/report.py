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
    profiles: list[str] = list(results.get("profiles", {"minimal": {}}))
    header = ["measure", "budget", "hearthlink", "bare", *peers, "ratio to bare", "met"]
    rows: list[list[str]] = []

    def cells(pick: Callable[[str], list[float | None]]) -> dict[str, Stats | None]:
        return {m: summary(pick(m)) for m in managers}

    def best_peer(stats: dict[str, Stats | None]) -> float | None:
        meds = [st["median"] for m, st in stats.items() if m in peers and st]
        return min(meds) if meds else None

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
        elif h["median"] <= limit:
            met = "yes (median)"
        else:
            over = h["median"] - limit
            met = f"no (+{over:.{digits}f} {unit})"
        rows.append(
            [label, budget, fmt(h, unit, digits), fmt(stats.get("bare"), unit, digits)]
            + [fmt(stats.get(m), unit, digits) for m in peers]
            + ["; ".join(ratios) or "—", met]
        )

    def limit_of(*values: float | None) -> float | None:
        vals = [v for v in values if v is not None]
        return min(vals) if vals else None

    for profile in profiles:
        tag = f"{profile} services"

        def key(k: str, profile: str = profile) -> str:
            return f"{profile}:{k}"

        ns = sorted({*results["ns"], *([results["idle_n"]] if profile == profiles[-1] else [])})
        for n in ns:
            st = cells(lambda m, n=n: s.get(m, {}).get(key(f"launch_{n}"), []))
            bare = st.get("bare")
            if n <= 4:
                budget = "≤ bare + 0.10 s, ≤ best peer"
                lim = limit_of(bare and bare["median"] + 0.10, best_peer(st))
            elif n <= 32:
                budget = "≤ bare × 1.10, ≤ best peer"
                lim = limit_of(bare and bare["median"] * 1.10, best_peer(st))
            else:
                budget, lim = "—", None
            add(f"{tag}: launch → all {n} answering /health", budget, st, "s", 3, lim)
            st = cells(lambda m, n=n: s.get(m, {}).get(key(f"startup_cpu_{n}"), []))
            if any(st.values()):
                add(
                    f"{tag}: supervisor-side CPU used by then, N = {n}",
                    "—",
                    st,
                    "s",
                    2,
                    None,
                    ratio=False,
                )
        st = cells(lambda m: s.get(m, {}).get(key("chain_5"), []))
        if any(st.values()):
            bare = st.get("bare")
            add(
                f"{tag}: chain of 5 (each `depends_on` the one before) → the last answering",
                "≤ bare chain + 15 ms per hop (5)",
                st,
                "s",
                3,
                None if bare is None else bare["median"] + 0.075,
            )
        spawned = cells(lambda m: [c["spawned_ms"] for c in s.get(m, {}).get(key("crash"), [])])
        add(
            f"{tag}: SIGKILL of a service → new process spawned (N = 4)",
            "—",
            spawned,
            "ms",
            1,
            None,
            ratio=False,
        )
        crash = cells(lambda m: [c["answering_ms"] for c in s.get(m, {}).get(key("crash"), [])])
        crash["bare"] = summary(
            [x["answering_ms"] for x in s.get("bare", {}).get(key("own_start"), [])]
        )
        own = crash["bare"]
        add(
            f"{tag}: SIGKILL of a service → new process answering (bare: its own start)",
            "≤ best peer, ≤ own start + 15 ms",
            crash,
            "ms",
            1,
            limit_of(own and own["median"] + 15, best_peer(crash)),
        )
        for n in results["ns"]:
            st = cells(lambda m, n=n: s.get(m, {}).get(key(f"stop_{n}"), []))
            lim = 20.0 if n <= 4 else 1000.0
            add(
                f"{tag}: SIGTERM of the manager → all gone, N = {n} (bare: SIGTERM to each)",
                f"≤ {lim:g} ms" if n <= 4 else "≤ 1 s",
                st,
                "ms",
                0,
                lim,
            )
        st = cells(lambda m: [x["rss_mib"] for x in s.get(m, {}).get(key("memory_4"), [])])
        add(
            f"{tag}: supervisor-side RSS (manager + its helpers), 4 services",
            "≤ 36 MiB",
            st,
            "MiB",
            1,
            36.0,
            ratio=False,
        )
        st = cells(lambda m: [x["uss_mib"] for x in s.get(m, {}).get(key("memory_4"), [])])
        add(f"{tag}: supervisor-side USS, 4 services", "—", st, "MiB", 1, None, ratio=False)
    for n, lim in ((4, 0.03), (32, 0.06), (results["idle_n"], 0.2)):
        st = cells(
            lambda m, n=n: (
                [s.get(m, {})[f"idle_{n}"]["cpu_s_per_20s"]] if f"idle_{n}" in s.get(m, {}) else []
            )
        )
        add(
            f"{profiles[-1]} services: supervisor-side CPU idle, N = {n}, per 20 s",
            f"≤ {lim:g} s" + (" (1 % of a core)" if lim == 0.2 else ""),
            st,
            "s",
            3,
            lim,
            ratio=False,
        )
    n = results["idle_n"]
    st = cells(
        lambda m: [s.get(m, {})[f"idle_{n}"]["rss_mib"]] if f"idle_{n}" in s.get(m, {}) else []
    )
    add(f"supervisor-side RSS, {n} services", "—", st, "MiB", 1, None, ratio=False)
    d = hl.get("default", {})
    if "skipped" in d:
        rows.append(
            ["default stack", "≤ bare + 0.10 s", f"skipped: {d['skipped']}", "—"]
            + ["—"] * len(peers)
            + ["—", "—"]
        )
    for cond, runs in d.get("conditions", {}).items():
        st = {
            "hearthlink": summary([r["healthy_s"] for r in runs.get("hearthlink", [])]),
            "bare": summary([r["healthy_s"] for r in runs.get("bare", [])]),
        }
        bare = st["bare"]
        what = {
            "warm": "warm: bytecode and config cached",
            "no bytecode": "PYTHONDONTWRITEBYTECODE=1 and no __pycache__, config cached",
            "no config cache": "bytecode cached, no config cache",
            "first": "a first start: PYTHONDONTWRITEBYTECODE=1, no __pycache__, no config cache",
        }.get(cond, cond)
        add(
            f"default stack ({what}): launch → all four healthy (bare: the four at once)",
            "≤ bare + 0.10 s",
            st,
            "s",
            2,
            None if bare is None else bare["median"] + 0.10,
        )
        cpu = summary([r["supervisor_cpu_s"] for r in runs.get("hearthlink", [])])
        add(
            f"default stack ({cond}): supervisor-side CPU by then",
            "—",
            {"hearthlink": cpu},
            "s",
            2,
            None,
        )
    cli = hl.get("cli", {})
    for k, label, limit in (
        ("version_ms", "`hearthlink --version` wall time", 60.0),
        ("status_ms", "`hearthlink status` wall time (N = 4 running)", 150.0),
        ("status_config_ms", "`hearthlink status --config FILE` wall time", 150.0),
        ("check_ms", "`hearthlink check` wall time", None),
    ):
        if cli.get(k):
            add(
                label,
                "—" if limit is None else f"≤ {limit:g} ms",
                {"hearthlink": summary(cli[k])},
                "ms",
                0,
                limit,
            )
    warm = d.get("conditions", {}).get("warm", {}).get("hearthlink", [])
    per = [
        max(v for v in r["service_rss_mib"].values() if v) for r in warm if r.get("service_rss_mib")
    ]
    if per:
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
        o = s.get(m, {}).get("orphans")
        orph.append(
            "—"
            if not o
            else f"{o['services_alive']}/{o['services']} · {o['children_alive']}/{o['children']}"
        )
    rows.append([*orph, "—", "—"])
    for profile in profiles:
        lags = [x for r in s.get("hearthlink", {}).get(f"{profile}:notice_lag_ms", []) for x in r]
        add(
            f"{profile} services: hearthlink: listening → logged healthy (every start)",
            "—",
            {"hearthlink": summary(lags)},
            "ms",
            0,
            None,
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
        f"{results['commit']}; peers: {peers}"
        + "".join(f"; {k}: {v}" for k, v in results.get("peers_not_run", {}).items())
        + f". {results['repeats']} repeats, interleaved; "
        f"took {results['elapsed_s']:.0f} s. Median (min–max).",
        "",
        table(header, rows),
        "",
        "met: hearthlink against the budget — yes: every run; yes (median): the median only; "
        "no (+x): the median is x over. Bare has no manager: its crash row is the service's "
        "own start (Popen → answering), its stop row SIGTERM to each service. Supervisor "
        "side: the manager and every process below it that is not a service's (hearthlink's "
        "sentinel, honcho's and PM2's helpers). Profiles: "
        + "; ".join(
            f"{k} {v or '(svc.py as it is)'}" for k, v in results.get("profiles", {}).items()
        )
        + ".",
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
