"""``firebox scenario``: run and list the outage replays (issue 6)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from firebox.sim.faults import FAULTS, NodeLossFault

__all__ = ["scenario_app"]

scenario_app = typer.Typer(help="Outage replays: a named fault under a realistic call load.", no_args_is_help=True)


@scenario_app.command("list")
def list_scenarios() -> None:
    """The scenarios and what each breaks."""
    table = Table("name", "fault")
    for name, cls in FAULTS.items():
        table.add_row(name, cls.title)
    Console().print(table)


@scenario_app.command("run")
def run(
    name: str = typer.Argument(..., help=f"one of: {', '.join(FAULTS)}"),
    speed: float = typer.Option(1.0, "--speed", min=0.01, help="the load's clock runs this many times faster"),
    surge: float = typer.Option(10.0, "--surge", min=0.01, help="times the normal call rate (a surge is 10)"),
    warmup: float = typer.Option(10.0, "--warmup", min=0.0, help="seconds of load before the fault"),
    fault_for: float = typer.Option(30.0, "--fault-for", min=0.0, help="seconds the fault lasts"),
    tail: float = typer.Option(15.0, "--tail", min=0.0, help="seconds of load after the heal"),
    json_out: Path | None = typer.Option(None, "--json", help="write the result as JSON here"),
    html_out: Path | None = typer.Option(None, "--html", help="write the HTML report here"),
    deployment: Path | None = typer.Option(None, "--deployment", exists=True, dir_okay=False,
                                           help="run on this deployment instead of the demo state"),  # fmt: skip
    database: str | None = typer.Option(None, "--database", help="the cluster's PostgreSQL for node-loss "
                                        "(default $FIREBOX_SCENARIO_DATABASE or the local 'test' database)"),  # fmt: skip
    nats: str | None = typer.Option(None, "--nats", help="the cluster's NATS JetStream for node-loss "
                                    "(default $FIREBOX_SCENARIO_NATS or nats://127.0.0.1:4222)"),  # fmt: skip
) -> None:
    """Run one scenario and print its figures; exit 1 when a criterion is not met."""
    from firebox.sim.peer import ClusterServicesUnavailable, PeerStartFailed
    from firebox.sim.report import render_html
    from firebox.sim.scenario import ScenarioConfig, run_scenario

    console = Console()
    if name not in FAULTS:
        console.print(f"[red]unknown scenario {name!r}[/red]; known: {', '.join(FAULTS)}")
        raise typer.Exit(2)
    if name == NodeLossFault.name and deployment is not None:
        console.print(f"[red]{name} runs on the demo state[/red] (it writes node B's deployment next to A's): "
                      "drop --deployment")  # fmt: skip
        raise typer.Exit(2)
    cluster = {k: v for k, v in (("database", database), ("nats", nats)) if v is not None}
    cfg = ScenarioConfig(name, speed=speed, surge=surge, warmup=warmup, fault_for=fault_for, tail=tail,
                         deployment=deployment, **cluster)  # fmt: skip
    try:
        result = asyncio.run(run_scenario(cfg)).as_dict()
    except ClusterServicesUnavailable as exc:
        console.print(f"[red]{name} needs a cluster's PostgreSQL and NATS JetStream:[/red] {exc}")
        raise typer.Exit(2) from None
    except PeerStartFailed as exc:
        console.print(f"{name}: {exc}", markup=False, highlight=False)  # the log's tail, as written
        raise typer.Exit(2) from None
    table = Table("figure", "value", title=f"{name}: {result['title']}")
    for key in ("intended", "alternate", "business_line", "worklist", "lost"):
        table.add_row(key.replace("_", " "), str(result["counts"][key]))
    table.add_row("offered", str(result["offered"]))
    for key in ("detect_s", "reroute_s", "notify_s"):
        v = result[key]
        table.add_row(key.removesuffix("_s").replace("_", " ") + " (s)", "-" if v is None else f"{v:.2f}")
    console.print(table)
    for crit, ok in result["criteria"].items():
        console.print(f"{crit}: {'[green]met[/green]' if ok else '[red]NOT met[/red]'}")
    if json_out is not None:
        json_out.write_text(json.dumps(result, indent=1, default=str), encoding="utf-8")
    if html_out is not None:
        html_out.write_text(render_html(result), encoding="utf-8")
        console.print(f"report: {html_out}")
    if not result["passed"]:
        raise typer.Exit(1)
