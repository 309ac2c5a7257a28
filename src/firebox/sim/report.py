"""The HTML report of one outage replay: a timeline plot (matplotlib, Agg, inline PNG in
base64) of calls offered / answered where meant / rerouted / not answered per second with
the fault and the detector's outage states shaded, the figures table, and the outage
timeline (every detector update and notification). One self-contained file."""

from __future__ import annotations

import base64
import html
import io
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from firebox.sim.public import public_rows

__all__ = ["render_html", "timeline_png"]

_COLOURS = {"suspected": "#f5c542", "confirmed": "#e0533d"}


def timeline_png(result: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = result["started"]
    calls = result["calls"]
    end = max(1, int(result["ended"] - t0) + 1)
    offered, answered, rerouted, unanswered = Counter(), Counter(), Counter(), Counter()
    for c in calls:
        s = int(c["started"] - t0)
        offered[s] += 1
        if c["category"] == "intended":
            answered[s] += 1
        elif c["category"] in ("alternate", "business_line"):
            rerouted[s] += 1
        else:
            unanswered[s] += 1
    xs = list(range(end))
    fig, ax = plt.subplots(figsize=(10, 4.2), dpi=100)
    ax.step(xs, [offered[x] for x in xs], where="post", label="offered", color="#444444")
    ax.step(xs, [answered[x] for x in xs], where="post", label="answered by the intended PSAP", color="#2a8f3c")
    ax.step(xs, [rerouted[x] for x in xs], where="post", label="answered elsewhere (rerouted)", color="#2d6cc0")
    if any(unanswered.values()):
        ax.step(xs, [unanswered[x] for x in xs], where="post", label="worklist / lost", color="#b0262b")
    if result["fault_at"] is not None:
        healed = result["healed_at"] or result["ended"]
        ax.axvspan(result["fault_at"] - t0, healed - t0, color="#999999", alpha=0.18, label="fault")
    # the detector's states: one band per outage, coloured by state over time
    spans: dict[str, list[tuple[float, str]]] = {}
    for u in result["updates"]:
        spans.setdefault(u["id"], []).append((u["at"] - t0, u["state"]))
    top = max([offered[x] for x in xs] + [1])
    for i, (oid, points) in enumerate(sorted(spans.items())):
        y = top * (1.08 + 0.07 * i)
        for (a, state), (b, _next) in zip(points, [*points[1:], (end, "cleared")]):
            if state in _COLOURS:
                ax.plot([a, b], [y, y], color=_COLOURS[state], linewidth=5, solid_capstyle="butt")
        ax.text(points[0][0], y, f" {oid}", fontsize=7, va="bottom")
    ax.set_xlabel("seconds since the load began")
    ax.set_ylabel("calls started per second")
    ax.set_title(f"{result['name']}: calls and the detector's outages (yellow suspected, red confirmed)")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_xlim(0, end)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    plt.close(fig)
    return out.getvalue()


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f} s"


def _iso(t: float | None) -> str:
    return "-" if t is None else datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")


def render_html(result: dict[str, Any]) -> str:
    e = html.escape
    png = base64.b64encode(timeline_png(result)).decode()
    counts = result["counts"]
    rows = [("calls offered", result["offered"]), ("answered by the intended PSAP", counts["intended"]),
            ("answered by an alternate", counts["alternate"]), ("sent to a business line", counts["business_line"]),
            ("on the callback worklist", counts["worklist"]), ("lost", counts["lost"]),
            ("time to detect", _fmt(result["detect_s"])), ("time to reroute", _fmt(result["reroute_s"])),
            ("time to notify", _fmt(result["notify_s"]))]  # fmt: skip
    rows += public_rows(result)
    figures = "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in rows)
    criteria = "".join(f"<li>{e(k)}: <b>{'met' if ok else 'NOT met'}</b></li>" for k, ok in result["criteria"].items())
    t0 = result["started"]
    events = [(result["fault_at"], "fault injected", result["title"])] if result["fault_at"] else []
    if result["healed_at"]:
        events.append((result["healed_at"], "fault healed", ""))
    events += [(u["at"], f"outage {u['id']} {u['kind']} ({u['state']})", u["cause"]) for u in result["updates"]
               if u["kind"] != "updated"]  # fmt: skip
    events += [(n["at"], f"notification {n['notification']} received", f"{n['outage_id']} {n['event']}")
               for n in result["notifications"]]  # fmt: skip
    timeline = "".join(f"<tr><td>{(t - t0):.2f}</td><td>{e(_iso(t))}</td><td>{e(what)}</td><td>{e(str(detail))}</td></tr>"
                       for t, what, detail in sorted(events, key=lambda x: x[0]))  # fmt: skip
    lost = "".join(f"<li>{e(str(c['identity']))} town {e(str(c['town']))}: {e(c['detail'])}</li>" for c in result["lost_calls"])
    outage_free = ("<p>No outage: every affected call was answered where it was meant to be and the detector "
                   "declared nothing, so there was nothing to detect, reroute or notify.</p>") if result["outage_free"] else ""  # fmt: skip
    spurious = (f"<p>Confirmed outages that were not this fault's: {e(', '.join(result['spurious_outages']))}</p>"
                if result.get("spurious_outages") else "")  # fmt: skip
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>firebox outage replay: {e(result['name'])}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1040px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:left}}
img{{max-width:100%}}</style></head><body>
<h1>Outage replay: {e(result['name'])}</h1>
<p>{e(result['title'])}. Speed {result['config']['speed']:g}, surge {result['config']['surge']:g}x.</p>
<img alt="timeline of calls offered, answered and rerouted, with the fault and the detector's outages"
 src="data:image/png;base64,{png}">
<h2>Figures</h2><table>{figures}</table>{outage_free}{spurious}
<h2>Criteria</h2><ul>{criteria}</ul>
{f'<h2>Lost calls</h2><ul>{lost}</ul>' if lost else ''}
<h2>Outage timeline</h2><table><tr><th>s</th><th>time (UTC)</th><th>what</th><th>detail</th></tr>{timeline}</table>
</body></html>
"""
