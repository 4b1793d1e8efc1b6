"""``dmtwin audit report``: one self-contained HTML file (inline SVG and CSS, no script, nothing
fetched) with, per host and per VM, memory and pressure over time, the status, the decisions, the
verification verdict and, when asked, the what-if comparison.

The data come from ``twin.whatif`` (a ``Meter`` with ``record``: samples at each balancer tick,
decimated to a bounded number of points) and ``twin.audit.verify``. The page is evidence: it opens
with what was checked (``Evidence``: the log's sha256, its first and last event time, the twin
version, the key's fingerprint, the verdict, and when the report was made, passed in by the caller
since the core reads no clock). Times are UTC, on the axes too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from . import __version__
from .audit import Verification, describe_decision, format_time
from .signing import short_fingerprint
from .whatif import COMPARE_COLUMNS, Comparison, Meter, Series, VmUsage, WhatIf

__all__ = ["Evidence", "render_report"]


@dataclass(frozen=True)
class Evidence:
    """What the report attests and when: the caller measures the log and reads the clock."""

    log_sha256: str
    """sha256 of the log's lines as read (uncompressed; of a plain file, ``sha256sum`` of it)."""
    first_ms: int | None
    last_ms: int | None
    generated_ms: int
    """When the report was made (the caller's clock)."""
    key: str | None
    """Fingerprint of the key the checkpoints were checked with."""
    verdict: str
    status: str
    accepted: bool = False
    twin_version: str = __version__

WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 920, 200, 64, 16, 14, 30
COLORS = {"assigned": "#1f77b4", "demand": "#d62728", "visible": "#7f7f7f", "whatif": "#2ca02c",
          "pressure": "#9467bd", "free": "#17becf", "capacity": "#444444"}
STATUS_COLORS = {0: "#eeeeee", 1: "#c7e9c0", 2: "#fdd0a2", 3: "#fc9272", 4: "#bcbddc"}
STATUS_NAMES = {0: "no data", 1: "OK", 2: "Low", 3: "Warning", 4: "Paging"}
MAX_DECISION_ROWS = 40

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:980px}
h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid #ccc;margin-top:32px}h3{font-size:15px;margin:20px 0 4px}
table{border-collapse:collapse;margin:6px 0;font-size:12px}td,th{border:1px solid #ddd;padding:2px 6px;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}.ok{color:#2a7d2a}.bad{color:#b22}.note{color:#555;font-size:12px}
svg.chart{display:block;margin:4px 0 10px;background:#fff}svg text{font:11px system-ui,sans-serif;fill:#333}
table.evidence th{width:150px}table.evidence code{font-size:11px}
.legend span{display:inline-block;margin-right:12px;font-size:12px}.legend i{display:inline-block;width:18px;
height:3px;margin-right:4px;vertical-align:middle}
"""


def _clock(at_ms: int) -> str:
    return format_time(at_ms)[11:19]


def chart(title: str, t: Sequence[int], lines: Sequence[tuple[str, Sequence[float], str, bool]], unit: str,
          bands: Sequence[int] | None = None, markers: Sequence[tuple[int, str]] = ()) -> str:
    """An SVG line chart. ``lines``: (label, values, colour, dashed); ``bands``: a status code per
    sample, drawn as a strip under the plot; ``markers``: (at_ms, 'up'|'down') triangles."""
    if not t:
        return ""
    t0, t1 = t[0], max(t[-1], t[0] + 1)
    top = max([max(values, default=0) for _, values, _, _ in lines] + [1])
    top = _nice(top * 1.05)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(at: int) -> float:
        return LEFT + (at - t0) * plot_w / (t1 - t0)

    def y(value: float) -> float:
        return TOP + plot_h - min(value, top) * plot_h / top

    parts = [(f'<svg class="chart" data-points="{len(t)}" width="{WIDTH}" height="{HEIGHT}" '
             f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}">'),
             f'<title>{escape(title)}</title>']
    for k in range(5):
        value = top * k / 4
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(value):.1f}" y2="{y(value):.1f}" '
                     f'stroke="#eee"/><text x="{LEFT - 4}" y="{y(value) + 4:.1f}" text-anchor="end">'
                     f'{value:,.0f}</text>')
    parts.append(f'<text x="4" y="{TOP - 3}">{escape(unit)}</text>')
    for k in range(5):
        at = t0 + (t1 - t0) * k // 4
        anchor = "start" if k == 0 else "end" if k == 4 else "middle"
        label = f"{_clock(at)} UTC" if k == 4 else _clock(at)
        if k == 0:
            label = f"{format_time(at)[:10]} {label}"
        parts.append(f'<text x="{x(at):.1f}" y="{HEIGHT - 8}" text-anchor="{anchor}">{label}</text>')
    if bands:
        start = 0
        for i in range(1, len(bands) + 1):
            if i == len(bands) or bands[i] != bands[start]:
                end = t[i] if i < len(t) else t1
                parts.append(f'<rect x="{x(t[start]):.1f}" y="{TOP + plot_h + 2}" '
                             f'width="{max(x(end) - x(t[start]), 0.5):.1f}" height="6" '
                             f'fill="{STATUS_COLORS[bands[start]]}"><title>{STATUS_NAMES[bands[start]]}</title></rect>')
                start = i
    for label, values, colour, dashed in lines:
        points = " ".join(f"{x(at):.1f},{y(v):.1f}" for at, v in zip(t, values))
        dash = ' stroke-dasharray="5 3"' if dashed else ""
        parts.append(f'<polyline data-points="{len(values)}" fill="none" stroke="{colour}" stroke-width="1.5"{dash} '
                     f'points="{points}"><title>{escape(label)}</title></polyline>')
    for at, direction in markers:
        if t0 <= at <= t1:
            px = x(at)
            shape = (f"{px - 4:.1f},{TOP + 8} {px + 4:.1f},{TOP + 8} {px:.1f},{TOP}" if direction == "up" else
                     f"{px - 4:.1f},{TOP} {px + 4:.1f},{TOP} {px:.1f},{TOP + 8}")
            colour = "#2ca02c" if direction == "up" else "#ff7f0e"
            parts.append(f'<polygon points="{shape}" fill="{colour}"/>')
    parts.append("</svg>")
    legend = "".join(f'<span><i style="background:{colour}"></i>{escape(label)}</span>'
                     for label, _, colour, _ in lines)
    if bands:
        legend += "".join(f'<span><i style="background:{STATUS_COLORS[c]};height:8px"></i>{name}</span>'
                          for c, name in STATUS_NAMES.items())
    return f'<div class="legend">{legend}</div>' + "".join(parts)


def _nice(value: float) -> float:
    """A round upper bound for an axis."""
    step = 10 ** max(len(str(int(value))) - 1, 0)
    return float(-(-value // step) * step)


def _usage_cells(u: VmUsage) -> str:
    return (f"<td>{u.warning_s:,.0f}</td><td>{u.paging_s:,.0f}</td><td>{u.average_mib:,.0f}</td>"
            f"<td>{u.saved_percent:.1f}</td><td>{u.add_ops}</td><td>{u.remove_ops}</td><td>{u.smart_paging}</td>")


USAGE_HEAD = ("<th>Warning s</th><th>Paging s</th><th>avg assigned MiB</th><th>saved vs Max %</th>"
              "<th>adds</th><th>removes</th><th>Smart Paging</th>")


def _evidence(e: Evidence) -> str:
    cls = "ok" if e.status == "OK" else "bad"
    accepted = " (accepted by the auditor's choice)" if e.accepted and e.status != "OK" else ""
    when = (f"{format_time(e.first_ms)} to {format_time(e.last_ms)}" if e.first_ms is not None
            and e.last_ms is not None else "no event")
    rows = [("Verdict", f'<b class="{cls}">{escape(e.verdict)}</b>{escape(accepted)}'),
            ("Log sha256", f"<code>{e.log_sha256}</code>"),
            ("Event time (UTC)", escape(when)),
            ("Signing key", escape(short_fingerprint(e.key)) + f" <code class=note>{e.key}</code>" if e.key
             else '<span class="bad">none given: the signatures were not checked</span>'),
            ("Verified by", f"dmtwin twin {escape(e.twin_version)}"),
            ("Report made", escape(format_time(e.generated_ms)))]
    body = "".join(f"<tr><th class=l>{name}</th><td class=l>{value}</td></tr>" for name, value in rows)
    return f'<table class="evidence">{body}</table>'


def _verification(v: Verification) -> str:
    verdict = f'<p class="{"ok" if v.ok else "bad"}">{escape(v.verdict())}</p>'
    rows = [f"<tr><td>{p.position}</td><td class=l>{escape(p.host)}</td><td class=l>chain: {p.kind}</td>"
            f"<td class=l>{escape(p.detail)}</td></tr>" for p in v.chain[:50]]
    rows += [f"<tr><td>{s.position}</td><td class=l>{escape(s.host)}</td><td class=l>signature: {s.kind}</td>"
             f"<td class=l>checkpoints line {s.checkpoint_line}: {escape(s.detail)}</td></tr>"
             for s in v.signature[:50]]
    rows += [f"<tr><td>{m.position}</td><td class=l>{escape(m.host)}/{escape(m.vm)}</td><td class=l>decision</td>"
             f"<td class=l>expected {escape(m.expected)}, recorded {escape(m.recorded)}</td></tr>"
             for m in v.mismatches[:50]]
    rows += [f"<tr><td>{r.position}</td><td></td><td class=l>rejected</td><td class=l>{escape(r.describe())}</td></tr>"
             for r in v.rejected[:50]]
    table = ("<table><tr><th>line</th><th class=l>where</th><th class=l>what</th><th class=l>detail</th></tr>"
             + "".join(rows) + "</table>") if rows else ""
    notes = "".join(f'<p class="note">{escape(n)}</p>' for n in v.notes())
    refused = ""
    if v.refused:
        items = "".join(f"<li>{escape(r.describe())}</li>" for r in v.refused[:50])
        refused = (f"<h3>Inputs refused when the log was written ({len(v.refused)})</h3><ul class=note>{items}</ul>")
    return (f"<h2>Verification</h2><p>{v.events:,} events: {v.inputs:,} inputs, {v.decisions:,} decisions; "
            f"{v.chained:,} chained lines. Lines are numbered from 1.</p>{verdict}{notes}{table}{refused}")


def _vm_section(host: str, vm: str, run: WhatIf) -> str:
    key = (host, vm)
    series: Series | None = run.actual.vm_series.get(key)
    out = [f'<h3 id="{escape(host)}-{escape(vm)}">VM {escape(vm)}</h3>']
    if series is None or not series.t:
        return out[0] + '<p class="note">No balancing round saw this VM running.</p>'
    v = series.values
    decisions = run.actual.decisions.get(key, [])
    markers = [(d.at_ms, "down" if d.type == "decision.balloon" else "up") for d in decisions
               if d.type in ("decision.balloon", "decision.unballoon", "decision.hot_add")]
    lines: list[tuple[str, Sequence[float], str, bool]] = [
        ("assigned", v["assigned"], COLORS["assigned"], False), ("demand", v["demand"], COLORS["demand"], False),
        ("guest visible", v["visible"], COLORS["visible"], True)]
    if run.whatif is not None:
        other = run.whatif.vm_series.get(key)
        if other is not None and other.t:
            lines.append(("what-if assigned", _resample(other, "assigned", series.t), COLORS["whatif"], True))
    out.append(chart(f"{host}/{vm}: memory (MiB)", series.t, lines, "MiB", markers=markers))
    out.append(chart(f"{host}/{vm}: pressure (%) and status", series.t,
                     [("pressure", v["pressure"], COLORS["pressure"], False)], "%", bands=v["status"]))
    if decisions:
        shown = decisions[-MAX_DECISION_ROWS:]
        rows = "".join(f"<tr><td class=l>{format_time(d.at_ms)}</td><td class=l>{escape(describe_decision(d))}</td>"
                       f"<td class=l>{escape(getattr(d, 'reason', ''))}</td></tr>" for d in shown)
        more = (f'<p class="note">{len(decisions) - len(shown)} earlier decisions not shown.</p>'
                if len(decisions) > len(shown) else "")
        out.append(f"<details><summary>{len(decisions)} decisions</summary>{more}<table><tr><th class=l>at</th>"
                   f"<th class=l>decision</th><th class=l>reason</th></tr>{rows}</table></details>")
    return "".join(out)


def _resample(series: Series, column: str, t: Sequence[int]) -> list[int]:
    """``series[column]`` at the times ``t`` (the last sample at or before each)."""
    out, j, values = [], 0, series.values[column]
    for at in t:
        while j + 1 < len(series.t) and series.t[j + 1] <= at:
            j += 1
        out.append(values[j] if series.t[j] <= at else 0)
    return out


def _host_section(host: str, run: WhatIf) -> str:
    out = [f"<h2>Host {escape(host)}</h2>"]
    series = run.actual.host_series.get(host)
    if series is not None and series.t:
        v = series.values
        out.append(chart(f"{host}: memory of all VMs (MiB)", series.t,
                         [("assigned to VMs", v["assigned"], COLORS["assigned"], False),
                          ("free for VMs", v["free"], COLORS["free"], False),
                          ("total − reserve", v["capacity"], COLORS["capacity"], True)], "MiB"))
    rows = [(vm, a, w) for (h, vm), a, w in run.rows() if h == host]
    head = f"<tr><th class=l>VM</th>{USAGE_HEAD}" + (f"{USAGE_HEAD}" if run.whatif else "") + "</tr>"
    if run.whatif:
        head = ("<tr><th></th><th colspan=7>actual</th><th colspan=7>what-if</th></tr>" + head)
    body = "".join(f'<tr><td class=l><a href="#{escape(host)}-{escape(vm)}">{escape(vm)}</a></td>{_usage_cells(a)}'
                   + (_usage_cells(w) if w is not None else "") + "</tr>" for vm, a, w in rows)
    out.append(f"<table>{head}{body}</table>")
    out += [_vm_section(host, vm, run) for vm, _, _ in rows]
    return "".join(out)


def _hosts(meter: Meter) -> list[str]:
    return sorted({h for h, _ in meter.usage} | set(meter.host_series))


def _comparison(table: Comparison) -> str:
    """Every policy on the log: the table, and Warning time against mean memory as an SVG scatter."""
    head = ("Warning VM-h", "Low VM-h", "short GiB-h", "mean GiB", "peak GiB", "saved %", "ops", "moved GiB")
    rows = "".join(f"<tr><td class=l>{escape(name)}</td>" + "".join(
        f"<td>{v[c]:,.0f}</td>" if c == "operations" else f"<td>{v[c]:,.2f}</td>" for c in COMPARE_COLUMNS) + "</tr>"
        for name, v in table.rows)
    w, h, pad = 480, 260, 48
    xs = [v["mean_gib"] for _, v in table.rows]
    ys = [v["warning_h"] for _, v in table.rows]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
    points: dict[tuple[float, float], list[str]] = {}  # runs at the same place share one dot and label
    for (name, _), x, y in zip(table.rows, xs, ys):
        at = (round(pad + (x - x0) / (x1 - x0) * (w - 2 * pad), 1), round(h - pad - (y - y0) / (y1 - y0) * (h - 2 * pad), 1))
        points.setdefault(at, []).append(name)
    dots = "".join(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="4" fill="#1f77b4"/><text x="{cx + 6:.1f}" '
                   f'y="{cy - 6:.1f}" font-size="11">{escape(", ".join(names))}</text>'
                   for (cx, cy), names in points.items())
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" '
           f'aria-label="Warning VM-hours against mean memory">'
           f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="#888"/>'
           f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="#888"/>'
           f'<text x="{w / 2}" y="{h - 12}" font-size="11" text-anchor="middle">mean GiB ({x0:.1f} – {x1:.1f})</text>'
           f'<text x="12" y="16" font-size="11">Warning VM-h ({y0:.2f} – {y1:.2f})</text>{dots}</svg>')
    notes = "".join(f'<p class="note">{escape(n)}</p>' for n in table.notes)
    return (f"<h2>Every policy on this log</h2>{notes}<table><tr><th class=l>run</th>"
            + "".join(f"<th>{escape(c)}</th>" for c in head) + f"</tr>{rows}</table>{svg}")


def render_report(run: WhatIf, verification: Verification | None = None, title: str = "dmtwin audit report",
                  source: str = "", evidence: Evidence | None = None, comparison: Comparison | None = None) -> str:
    """The whole report as one HTML document."""
    parts = [(f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{escape(title)}</title>"
             f"<style>{CSS}</style></head><body><h1>{escape(title)}</h1>")]
    if source:
        parts.append(f'<p class="note">Log: {escape(source)}</p>')
    if evidence is not None:
        parts.append(_evidence(evidence))
    if verification is not None:
        parts.append(_verification(verification))
    if run.whatif is not None:
        actual, what = run.totals()
        parts.append(f"<h2>What if: {escape(run.changes.describe())}</h2>")
        parts += [f'<p class="note">{escape(n)}</p>' for n in run.notes]
        parts.append(f"<table><tr><th class=l>all VMs</th>{USAGE_HEAD}</tr>"
                     f"<tr><td class=l>actual</td>{_usage_cells(actual)}</tr>"
                     f"<tr><td class=l>what-if</td>{_usage_cells(what)}</tr></table>")
        if run.rejected_whatif:
            parts.append(f'<p class="note">{len(run.rejected_whatif)} recorded inputs did not apply in the what-if, '
                         f"e.g. {escape(run.rejected_whatif[0])}</p>")
    if comparison is not None:
        parts.append(_comparison(comparison))
    parts += [_host_section(host, run) for host in _hosts(run.actual)]
    parts.append("</body></html>\n")
    return "".join(parts)
