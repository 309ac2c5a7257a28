"""The ``firebox`` command (typer; rich output and progress bars).

Heavy imports happen inside the commands so that ``firebox --help`` stays instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from firebox import __version__
from firebox.change.cli import change_app
from firebox.cluster.cli import cluster_app
from firebox.console.cli import console_cli
from firebox.logging.cli import logs_app
from firebox.policy.cli import policy_app
from firebox.sim.cli import scenario_app

app = typer.Typer(
    name="firebox",
    help="firebox: an open-source Next Generation 9-1-1 system (NENA i3).",
    no_args_is_help=True,
    add_completion=False,
)
deployment_app = typer.Typer(help="Check and show deployment files.", no_args_is_help=True)
lost_app = typer.Typer(help="Ask a LoST server (ECRF) from the command line.", no_args_is_help=True)
app.add_typer(deployment_app, name="deployment")
app.add_typer(lost_app, name="lost")
app.add_typer(logs_app, name="logs")
app.add_typer(policy_app, name="policy")
app.add_typer(change_app, name="change")
app.add_typer(cluster_app, name="cluster")
app.add_typer(scenario_app, name="scenario")
app.add_typer(console_cli, name="console")

console = Console()
#: Generated callers the demo's LIS holds (population-weighted across the towns).
DEMO_CALLERS = 5000
err = Console(stderr=True)


def _mount_gis() -> None:
    from firebox.gis.cli import gis_app

    app.add_typer(gis_app, name="gis")


_mount_gis()


@app.command()
def version() -> None:
    """Print the firebox version."""
    console.print(f"firebox {__version__}")


@deployment_app.command("check")
def deployment_check(path: Path) -> None:
    """Validate a deployment file: every problem with its key and line; exit 1 if any."""
    from firebox.deployment import DeploymentError, load_deployment

    try:
        dep = load_deployment(path)
    except DeploymentError as exc:
        for problem in exc.problems:
            err.print(f"[red]✗[/red] {problem}", highlight=False)
        raise typer.Exit(1) from None
    console.print(
        f"[green]✓[/green] {path}: {dep.authority.name} ({dep.authority.state}), "
        f"{len(dep.gis.layers)} layers, {len(dep.psaps)} PSAPs"
    )


@app.command()
def serve(
    path: Annotated[Path, typer.Argument(help="The deployment file.")],
    duration: Annotated[Optional[float], typer.Option(help="Stop after this many seconds.")] = None,
) -> None:
    """Serve the elements a deployment file names (ECRF/LVF, LIS, web page, BCF + ESRP,
    simulated PSAP agents)."""
    from firebox.deployment import DeploymentError, load_deployment
    from firebox.node import build_node, run_node

    try:
        dep = load_deployment(path)
    except DeploymentError as exc:
        for problem in exc.problems:
            err.print(f"[red]✗[/red] {problem}", highlight=False)
        raise typer.Exit(1) from None
    node = build_node(dep, console=console)
    run_node(node, console=console, duration=duration)


@app.command()
def demo(
    seed: Annotated[int, typer.Option(help="Seed of the generated state.")] = 911,
    towns: Annotated[int, typer.Option(min=40, max=80, help="Number of towns (40-80).")] = 60,
    listen: Annotated[str, typer.Option(help="HOST:PORT for the ECRF, LIS and page.")] = "127.0.0.1:7070",
    duration: Annotated[
        Optional[float], typer.Option(help="Run this many seconds, then print a summary and stop.")
    ] = None,
    rate: Annotated[
        float, typer.Option(min=0, help="Generated callers per second: HELD + LoST lookups, and as many SIP 911 calls.")
    ] = 20.0,
    sip_listen: Annotated[
        str, typer.Option(help="HOST:PORT of the BCF + ESRP (SIP over UDP and TCP); port 0: any free port.")
    ] = "127.0.0.1:5070",
    psap_fault: Annotated[
        Optional[list[str]],
        typer.Option(help="PSAP_ID=busy|silent: that PSAP refuses (503) or ignores its calls; repeatable."),
    ] = None,
    workdir: Annotated[Path, typer.Option(help="Where the generated state is written.")] = Path(
        "var/demo"
    ),
    write: Annotated[
        Optional[Path], typer.Option(help="Only write the state and its deployment.yaml here.")
    ] = None,
) -> None:
    """Generate a state (towns, PSAPs, streets, fire alarm boxes) and run firebox on it."""
    from firebox.deployment import DeploymentError
    from firebox.node import attach_callers, build_node, run_node, write_demo

    faults: dict[str, str] = {}
    for item in psap_fault or []:
        psap_id, sep, mode = item.partition("=")
        if not sep or mode not in ("busy", "silent", "answer"):
            err.print(f"[red]✗[/red] --psap-fault {item!r}: expected PSAP_ID=busy or PSAP_ID=silent", highlight=False)
            raise typer.Exit(2)
        faults[psap_id] = mode
    target = write or workdir
    try:
        deployment_file, state = write_demo(
            target, seed=seed, n_towns=towns, listen=listen, sip_listen=sip_listen, faults=faults, console=console,
            call_handling=True,  # the PSAPs' calls go to the call handling element (console, ACD)
        )
    except DeploymentError as exc:
        for problem in exc.problems:
            err.print(f"[red]✗[/red] {problem}", highlight=False)
        raise typer.Exit(2) from None
    if write is not None:
        console.print(f"wrote {deployment_file}")
        return
    from firebox.demo.state import sample_callers
    from firebox.deployment import load_deployment

    # The demo starts through the same loader as `firebox serve`, from the files just written.
    node = build_node(load_deployment(deployment_file), console=console)
    from firebox.web.demo import install_demo_controls

    install_demo_controls(node)  # "break something" buttons: only `firebox demo` mounts them
    attach_callers(node, sample_callers(state, DEMO_CALLERS, seed=seed))
    run_node(node, console=console, duration=duration, caller_rate=rate)


@lost_app.command("find")
def lost_find(
    url: Annotated[str, typer.Argument(help="LoST server URL, e.g. http://127.0.0.1:7070/lost")],
    lat: Annotated[float, typer.Option(help="Latitude (WGS84).")],
    lon: Annotated[float, typer.Option(help="Longitude (WGS84).")],
    service: Annotated[str, typer.Option(help="Service URN.")] = "urn:service:sos",
    recursive: Annotated[bool, typer.Option(help="Ask the server to recurse.")] = False,
) -> None:
    """findService for a point; prints the mapping (or the error) and exits 1 on error."""
    import asyncio

    from firebox.location.shapes import Point
    from firebox.lost.client import AsyncLostClient
    from firebox.lost.messages import FindServiceResponse

    async def ask():  # noqa: ANN202
        client = AsyncLostClient(url)
        try:
            return await client.find_service(Point(lat, lon), service, recursive=recursive)
        finally:
            await client.aclose()

    resp = asyncio.run(ask())
    if not isinstance(resp, FindServiceResponse):
        err.print(f"[red]{type(resp).__name__}[/red] {resp}", highlight=False)
        raise typer.Exit(1)
    for m in resp.mappings:
        name = m.display_names[0][0] if m.display_names else m.source_id
        console.print(f"[bold]{name}[/bold] {' '.join(m.uris)}  dial {m.service_number or '-'}")
        console.print(f"  service {m.service}  source {m.source}/{m.source_id}  expires {m.expires}")
    if resp.path:
        console.print(f"  path {' -> '.join(resp.path)}")


def main() -> None:  # pragma: no cover - entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
