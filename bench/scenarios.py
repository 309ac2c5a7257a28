"""Outage replays at full length (issue 6): every scenario on the demo state with a 10x
surge, plus a baseline run without any fault, measured in the same run; prints one table
(for BENCHMARKS.md), then each run's teardown (seconds, any step that overran its bound,
whether every log event reached both Logging Services), and writes each run's JSON and HTML
report under ``--out``. As recorded in BENCHMARKS.md (the load's clock 10x; the fault, the
monitor and every timing in real time):

    .venv/bin/python bench/scenarios.py --warmup 10 --fault-for 30 --tail 10 --speed 10 [--only tdos ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from firebox.sim.faults import FAULTS
from firebox.sim.report import render_html
from firebox.sim.scenario import ScenarioConfig, run_scenario


def _s(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--warmup", type=float, default=20.0)
    ap.add_argument("--fault-for", type=float, default=60.0)
    ap.add_argument("--tail", type=float, default=20.0)
    ap.add_argument("--speed", type=float, default=1.0)
    ap.add_argument("--surge", type=float, default=10.0)
    ap.add_argument("--out", type=Path, default=Path("artifacts/scenarios"))
    ap.add_argument("--only", nargs="*", default=None, help="scenario names (default: all)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    names = args.only or list(FAULTS)
    runs: list[dict] = []
    for name in ["baseline", *names]:
        cfg = ScenarioConfig(names[0] if name == "baseline" else name, speed=args.speed, surge=args.surge,
                             warmup=args.warmup, fault_for=args.fault_for, tail=args.tail,
                             fault="none" if name == "baseline" else None)  # fmt: skip
        result = (await run_scenario(cfg)).as_dict()
        result["bench_name"] = name
        (args.out / f"{name}.json").write_text(json.dumps(result, indent=1, default=str), encoding="utf-8")
        (args.out / f"{name}.html").write_text(render_html(result), encoding="utf-8")
        runs.append(result)
        print(f"{name}: done ({result['offered']} calls)", flush=True)
    base = runs[0]
    base_share = base["counts"]["intended"] / max(1, base["offered"])
    print()
    print(f"10x surge, speed {args.speed:g}, {args.warmup:g} s + {args.fault_for:g} s fault + {args.tail:g} s; "
          f"baseline (no fault): {base['offered']} calls, {base['counts']['intended']} answered by the intended PSAP")
    print()
    print("| scenario | offered | intended | alternate | business line | worklist | lost | detect s | reroute s | "
          "notify s | intended vs baseline | criteria |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        c = r["counts"]
        share = c["intended"] / max(1, r["offered"])
        crit = "met" if r["passed"] else "NOT met: " + ", ".join(k for k, ok in r["criteria"].items() if not ok)
        if r["outage_free"] and r["fault_at"] is not None:
            crit += " (absorbed: no outage)"
        print(f"| {r['bench_name']} | {r['offered']} | {c['intended']} | {c['alternate']} | {c['business_line']} | "
              f"{c['worklist']} | {c['lost']} | {_s(r['detect_s'])} | {_s(r['reroute_s'])} | {_s(r['notify_s'])} | "
              f"{share / base_share if base_share else 0:.2f} | {crit} |")
    print()
    for r in runs:
        t = r["figures"].get("teardown") or {}
        logs = t.get("log_delivery") or {}
        print(f"{r['bench_name']}: teardown {t.get('seconds', '-')} s, overruns {t.get('overruns') or 'none'}, "
              f"log events {logs.get('logged', {})}, all delivered: {logs.get('delivered', '-')}")


if __name__ == "__main__":
    asyncio.run(main())
