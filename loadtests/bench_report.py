"""``make bench``'s report: every benchmark's figures in one page, charts, a verdict per target.

The benchmarks write their figures to ``reports/bench/<name>.json``; this reads them and
writes ``reports/bench/index.html`` (no script, nothing loaded from elsewhere), one PNG per
chart and ``figures.json`` (all the figures in one document), and prints one verdict line per
target of issue 19. A benchmark whose file is missing is "not measured", never a pass.

- ``gateway.json`` (``bench_gateway``): throughput rows, ratios to nginx, and the
  latency-vs-load curves of the gateway and nginx.
- ``saga.json`` (the saga benchmark): ``{"machine", "measured_at", "latency_vs_load":
  {"peak_rps", "steps": [{"offered", "achieved", "p50_ms", "p99_ms"}], "knee_rps"},
  "replicas": [{"replicas", "steady_rps", "cpu_per_order_ms"}], "targets": {...}}``.
- ``saga_curves.json`` (``bench_curves``): the saga's latency vs load and throughput vs
  replicas on the local platform through the gateway; drawn as the saga's curves (its keys
  ``latency_vs_load``, ``replicas``, ``replica_efficiency`` join the saga's figures).
- ``console.json`` (``bench_console --json``): figures only.
- ``memory.json`` (``bench_memory``): the whole local platform's RSS idle and at the saga
  load, per process, with its two targets.

``--publish`` also copies the latency-vs-load chart to ``docs/bench/`` and writes it into the
README between its markers, with the date and machine each panel was measured on (the chart
carries them too).
"""

from __future__ import annotations

import argparse
import html
import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

REPORTS = Path("reports") / "bench"
DOCS = Path("docs") / "bench"
README = Path("README.md")
README_START = "<!-- latency-vs-load: make bench-report PUBLISH=1 writes this block -->"
README_END = "<!-- /latency-vs-load -->"
NOT_MEASURED = "not measured"
GATEWAY_COLOR, NGINX_COLOR, SAGA_COLOR = "#1f77b4", "#2ca02c", "#d62728"
# Milliseconds as written (0.5, 2, 300), not as powers of ten, on the log axes.
_PLAIN = FuncFormatter(lambda value, _: f"{value:g}")


def say(message: str) -> None:
    print(message, flush=True)


# -- what the benchmarks share: the machine, the time --------------------------------------
def machine() -> dict[str, Any]:
    """The machine a run was measured on, and how busy it was: a shared machine's figures
    are read differently from a quiet one's."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cpus = os.cpu_count() or 1
    load = os.getloadavg()[0]
    return {
        "host": platform.node(),
        "cpu_model": model,
        "cpus": cpus,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "commit": _commit(),
        "load_average_1m": round(load, 2),
        # More runnable work than cores: the throughput figures are not a quiet machine's.
        "loaded": load > cpus,
    }


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def machine_line(data: Mapping[str, Any]) -> str:
    """``2026-12-02 on 2 x Intel Xeon ..., load 1.2 (quiet)``: for charts and the README."""
    m = data.get("machine") or {}
    when = str(data.get("measured_at", ""))[:10] or "an unknown date"
    # Loaded at the start or at the end: the run shared the machine for part of its time.
    loads = [m[k] for k in ("load_average_1m_at_start", "load_average_1m") if k in m]
    loaded = m.get("loaded") or any(load > m.get("cpus", 1) for load in loads)
    state = "LOADED machine" if loaded else "quiet"
    cpu = m.get("cpu_model") or "unknown CPU"
    load = "-".join(f"{x:g}" for x in loads) or "?"
    return f"{when} on {m.get('cpus', '?')} x {cpu}, load {load} ({state})"


# -- reading -----------------------------------------------------------------------------
def load(folder: Path) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for name in ("gateway", "saga", "console", "memory"):
        path = folder / f"{name}.json"
        if path.exists():
            try:
                figures[name] = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                say(f"bench-report: {path} is not JSON ({exc}); treated as not measured")
    curves = folder / "saga_curves.json"
    if curves.exists():
        try:
            data = json.loads(curves.read_text())
        except json.JSONDecodeError as exc:
            say(f"bench-report: {curves} is not JSON ({exc}); treated as not measured")
        else:
            saga = figures.setdefault("saga", {})
            for key in ("latency_vs_load", "replicas", "replica_efficiency"):
                if key in data:
                    saga[key] = data[key]
            for key in ("machine", "measured_at", "setup"):
                saga.setdefault(key, data.get(key))
            saga["curves"] = {k: data.get(k) for k in ("machine", "measured_at", "setup")}
    return figures


# -- verdicts ----------------------------------------------------------------------------
def verdicts(figures: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(target, figure, MET / MISSED / not measured) for every target of issue 19."""
    out: list[tuple[str, str, str]] = []
    gateway = figures.get("gateway")
    if gateway:
        for target in gateway.get("targets", {}).values():
            out.append((target["name"], target["figure"], "MET" if target["met"] else "MISSED"))
        curves = gateway.get("latency_vs_load", {})
        steps = min((len(c.get("steps", [])) for c in curves.values()), default=0)
        out.append(
            (
                "gateway and nginx latency vs load, 10%-120% of peak, >= 8 steps",
                f"{steps} steps each" if curves else NOT_MEASURED,
                "MET" if curves and steps >= 8 else "MISSED",
            )
        )
    else:
        out.append(("gateway (make bench-gateway)", NOT_MEASURED, NOT_MEASURED))
    saga = figures.get("saga")
    if saga:
        out += _saga_verdicts(saga)
    else:
        out.append(("saga and its curves", NOT_MEASURED, NOT_MEASURED))
    memory = figures.get("memory")
    if memory:
        for target in memory.get("targets", {}).values():
            out.append((target["name"], target["figure"], "MET" if target["met"] else "MISSED"))
    else:
        out.append(("platform memory (make bench-memory)", NOT_MEASURED, NOT_MEASURED))
    return out


def _rate(value: float | None) -> str:
    return f"{value:,.0f}/s" if value else "none within the range"


def _saga_verdicts(saga: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """The saga benchmark names its own targets; each is a bool or ``{"met", ...}``."""
    out = []
    for name, target in (saga.get("targets") or {}).items():
        if isinstance(target, Mapping):
            met = target.get("met")
            figure = ", ".join(f"{k} {v}" for k, v in target.items() if k != "met")
        else:
            met, figure = target, ""
        state = NOT_MEASURED if met is None else ("MET" if met else "MISSED")
        out.append((f"saga: {name}", figure, state))
    curve = saga.get("latency_vs_load") or {}
    steps = len(curve.get("steps") or [])
    out.append(
        (
            "saga POST->terminal latency vs load, knee marked",
            f"{steps} steps, knee {_rate(curve.get('knee_rps'))}" if curve else NOT_MEASURED,
            (
                NOT_MEASURED
                if not curve
                else "MET"
                if steps >= 8 and curve.get("knee_rps")
                else "MISSED"
            ),
        )
    )
    replicas = saga.get("replicas") or []
    efficiency = saga.get("replica_efficiency")
    out.append(
        (
            "saga throughput with 1 and 2 replicas",
            ", ".join(f"{r['replicas']}: {r['steady_rps']:.0f}/s" for r in replicas)
            + (f" ({efficiency:.0%} of twice one replica's)" if efficiency is not None else "")
            if replicas
            else NOT_MEASURED,
            NOT_MEASURED if not replicas else "MET" if len(replicas) >= 2 else "MISSED",
        )
    )
    return out


# -- charts ------------------------------------------------------------------------------
def _curve(ax: Axes, curve: Mapping[str, Any], label: str, color: str, row: int = 0) -> None:
    steps = curve.get("steps") or []
    x = [s["offered"] for s in steps]
    ax.plot(x, [s["p99_ms"] for s in steps], "-o", color=color, label=f"{label} p99", ms=4)
    ax.plot(
        x, [s["p50_ms"] for s in steps], "--s", color=color, label=f"{label} p50", ms=3, alpha=0.8
    )
    knee = curve.get("knee_rps")
    if knee:
        ax.axvline(knee, color=color, lw=0.8, ls=":", alpha=0.9)
        # The knee's value goes in a corner, one row per curve: two knees a few hundred
        # requests/s apart would print their labels over each other beside the lines.
        ax.text(
            0.02,
            0.97 - 0.07 * row,
            f"{label} knee: {knee:,.0f}/s (dotted line)",
            transform=ax.transAxes,
            color=color,
            fontsize=8,
            va="top",
        )


def latency_chart(figures: Mapping[str, Any]) -> Figure | None:
    gateway, saga = figures.get("gateway"), figures.get("saga")
    curves = (gateway or {}).get("latency_vs_load") or {}
    saga_curve = (saga or {}).get("latency_vs_load") or {}
    panels = [p for p in ("proxies", "saga") if (curves if p == "proxies" else saga_curve)]
    if not panels:
        return None
    fig = Figure(figsize=(6.2 * len(panels), 5.0), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels, strict=True):
        if panel == "proxies":
            assert gateway is not None
            for row, (name, color) in enumerate(
                (("gateway", GATEWAY_COLOR), ("nginx", NGINX_COLOR))
            ):
                if name in curves:
                    _curve(ax, curves[name], name, color, row)
            ax.set_title(f"Gateway and nginx: latency vs offered load\n{machine_line(gateway)}")
            ax.set_xlabel("offered requests/s (open loop; each request timed from its slot)")
        else:
            assert saga is not None
            _curve(ax, saga_curve, "saga POST->terminal", SAGA_COLOR)
            ax.set_title(
                f"Saga: POST->terminal latency vs offered orders/s\n"
                f"{machine_line(saga.get('curves') or saga)}"
            )
            ax.set_xlabel("offered orders/s (open loop through the gateway; timed from the slot)")
        ax.set_ylabel("latency, ms (log)")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        # Below the axes: inside, it would cover the low-load end of the curves.
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(_PLAIN)
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.title.set_fontsize(9)
    return fig


def replicas_chart(saga: Mapping[str, Any] | None) -> Figure | None:
    rows = (saga or {}).get("replicas") or []
    if not saga or not rows:
        return None
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    labels = [f"{r['replicas']} of each" for r in rows]
    rates = [r["steady_rps"] for r in rows]
    ax.bar(labels, rates, color=SAGA_COLOR, alpha=0.8, width=0.5)
    for i, r in enumerate(rows):
        ax.annotate(
            f"{r['steady_rps']:.0f} orders/s\n{r['cpu_per_order_ms']:.2f} ms CPU/order",
            (i, r["steady_rps"]),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_ylim(0, max(rates, default=1) * 1.3)  # room for the labels above the bars
    ax.set_xlabel("replicas of each service")
    ax.set_ylabel("steady terminal orders/s")
    efficiency = saga.get("replica_efficiency")
    if efficiency is not None and len(rows) > 1 and rows[0]["steady_rps"]:
        gain = rows[1]["steady_rps"] / rows[0]["steady_rps"] - 1
        ax.text(
            0.5,
            0.97,
            f"2 replicas of each: {gain:+.0%} orders/s, {efficiency:.0%} of twice the 1-replica "
            "rate\n(2 cores: a second replica adds partitions consumed in parallel, not cores)",
            transform=ax.transAxes,
            ha="center",
            va="top",
            fontsize=8,
        )
    ax.set_title(
        f"Saga throughput vs replicas\n{machine_line(saga.get('curves') or saga)}", fontsize=9
    )
    return fig


# -- the page ----------------------------------------------------------------------------
def _table(rows: Sequence[Sequence[Any]], head: Sequence[str]) -> str:
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{cells}</tr>{body}</table>"


def _gateway_rows(gateway: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for r in gateway.get("results", []):
        cpu = f"{r['cpu_us']:.0f}" if r.get("cpu_us") is not None else ""
        rows.append(
            [r["label"], f"{r['rps']:,.0f}", f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}", cpu]
        )
    return rows


def page(figures: Mapping[str, Any], checks: list[tuple[str, str, str]], pngs: list[str]) -> str:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>mesh benchmarks</title>",
        "<style>body{font:14px sans-serif;margin:2em;max-width:80em}table{border-collapse:"
        "collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}"
        ".MET{color:#176e17}.MISSED{color:#b00}.not{color:#777}img{max-width:100%}"
        "pre{background:#f6f6f6;padding:1em;overflow:auto}</style></head><body>",
        "<h1>mesh benchmarks</h1>",
        f"<p>Drawn {html.escape(now_iso())}. Throughput figures from a loaded machine are "
        "not a quiet machine's: each benchmark's machine and load are given with it.</p>",
        "<h2>Verdicts</h2><table><tr><th>target</th><th>figure</th><th>verdict</th></tr>",
    ]
    for name, figure, state in checks:
        css = state.split()[0]
        parts.append(
            f"<tr><td>{html.escape(name)}</td><td>{html.escape(figure)}</td>"
            f"<td class='{css}'>{html.escape(state)}</td></tr>"
        )
    parts.append("</table>")
    for png in pngs:
        parts.append(f"<p><img src='{html.escape(png)}' alt='{html.escape(png)}'></p>")
    gateway = figures.get("gateway")
    if gateway:
        parts.append(f"<h2>Gateway</h2><p>{html.escape(machine_line(gateway))}. ")
        parts.append(html.escape(gateway.get("setup", "")) + "</p>")
        parts.append(
            _table(_gateway_rows(gateway), ["row", "req/s", "p50 ms", "p99 ms", "CPU us/req"])
        )
        for name, curve in (gateway.get("latency_vs_load") or {}).items():
            rows = [
                [
                    f"{s['offered']:,.0f}",
                    f"{s['achieved']:,.0f}",
                    f"{s['p50_ms']:.2f}",
                    f"{s['p99_ms']:.2f}",
                ]
                for s in curve.get("steps", [])
            ]
            parts.append(
                f"<h3>{html.escape(name)}: latency vs load (peak {curve['peak_rps']:,.0f}/s)</h3>"
            )
            parts.append(_table(rows, ["offered/s", "achieved/s", "p50 ms", "p99 ms"]))
    memory = figures.get("memory")
    if memory:
        parts.append(
            f"<h2>Memory of the local platform</h2><p>{html.escape(machine_line(memory))}. "
            "RSS counts a page shared by two processes twice (the interpreter's libraries); "
            "PSS splits it between them.</p>"
        )
        idle, load = memory.get("idle", {}), memory.get("load", {})
        rows = [
            [name, f"{idle[name]:.1f}", f"{load.get(name, 0):.1f}"]
            for name in sorted(idle, key=lambda n: -idle[n])
        ]
        rows.append(["total RSS", f"{memory['idle_rss_mb']:.1f}", f"{memory['load_rss_mb']:.1f}"])
        rows.append(["total PSS", f"{memory['idle_pss_mb']:.1f}", f"{memory['load_pss_mb']:.1f}"])
        parts.append(_table(rows, ["process", "idle RSS MB", "at the saga load RSS MB"]))
    for name in ("saga", "console", "memory"):
        if name not in figures:
            parts.append(f"<h2>{name.capitalize()}</h2><p class='not'>{NOT_MEASURED}</p>")
    parts.append("<h2>All figures (figures.json)</h2><pre>")
    parts.append(html.escape(json.dumps(figures, indent=2)))
    parts.append("</pre></body></html>")
    return "".join(parts)


def write(folder: Path, publish: bool = False) -> int:
    figures = load(folder)
    checks = verdicts(figures)
    folder.mkdir(parents=True, exist_ok=True)
    pngs = []
    for name, fig in (
        ("latency-vs-load.png", latency_chart(figures)),
        ("saga-replicas.png", replicas_chart(figures.get("saga"))),
    ):
        if fig is not None:
            fig.savefig(folder / name, dpi=110, metadata={"Software": None})
            pngs.append(name)
    (folder / "figures.json").write_text(json.dumps(figures, indent=2))
    (folder / "index.html").write_text(page(figures, checks, pngs))
    say("")
    say("== verdicts (issue 19)")
    width = max(len(name) for name, _, _ in checks)
    for name, figure, state in checks:
        say(f"{name:<{width}}  {state:<12}  {figure}")
    say(f"report: {folder / 'index.html'} (charts: {', '.join(pngs) or 'none'}; figures.json)")
    if publish:
        if "latency-vs-load.png" not in pngs:
            say("bench-report: nothing to publish (no latency-vs-load chart)")
            return 1
        DOCS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(folder / "latency-vs-load.png", DOCS / "latency-vs-load.png")
        caption = chart_caption(figures)
        say(f"published {DOCS / 'latency-vs-load.png'}: {caption}")
        if not publish_readme(README, caption):
            say(f"bench-report: {README} has no {README_START!r} ... {README_END!r} block")
            return 1
    return 0


def chart_caption(figures: Mapping[str, Any]) -> str:
    """When and where each panel of the chart was measured, for the README."""
    parts = []
    if figures.get("gateway"):
        parts.append(f"gateway and nginx measured {machine_line(figures['gateway'])}")
    saga = figures.get("saga") or {}
    if saga.get("latency_vs_load"):
        parts.append(f"the saga measured {machine_line(saga.get('curves') or saga)}")
    return "; ".join(parts)


def publish_readme(readme: Path, caption: str) -> bool:
    """Put the chart and its caption between the README's markers; False without them."""
    text = readme.read_text()
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        return False
    block = (
        f"{README_START}\n"
        "![Latency vs offered load: the gateway and nginx, and the saga]"
        f"({DOCS / 'latency-vs-load.png'})\n\n"
        f"*{caption[:1].upper() + caption[1:]}. Open loop, each request timed from its slot "
        "in the schedule; p50 dashed, p99 solid; `make bench` draws it in "
        "`reports/bench/index.html`, `make bench-report PUBLISH=1` puts it here.*\n"
    )
    readme.write_text(text[:start] + block + text[end:])
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, default=REPORTS)
    parser.add_argument("--publish", action="store_true", help="copy the chart to docs/bench/")
    args = parser.parse_args(argv)
    return write(args.folder, args.publish)


if __name__ == "__main__":
    sys.exit(main())
