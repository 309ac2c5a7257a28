"""``firebox gis``: check GIS boundary layers before an ECRF serves them.

Exit codes of ``check``: 0 when the layer is usable (repaired geometry is a warning),
1 when errors remain (overlaps, gaps, duplicate ids, missing URIs, unusable geometry),
2 when the file cannot be read as a layer at all.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

gis_app = typer.Typer(
    help="Check GIS boundary layers (GeoJSON, GeoPackage, Shapefile) for an ECRF.",
    no_args_is_help=True,
    add_completion=False,
)



@gis_app.callback()
def _gis() -> None:
    """Check GIS boundary layers (GeoJSON, GeoPackage, Shapefile) for an ECRF."""
    # A callback keeps ``check`` a subcommand even while it is the only one.


_SERVICE_URN = re.compile(r"^urn:service:[a-z0-9][a-z0-9.\-]*$")
#: Steps of a check, in order: reading, then the four of ``check_boundaries``.
_STEPS = 5


@gis_app.command("check")
def check(
    path: Annotated[Path, typer.Argument(help="The boundary layer file.")],
    service: Annotated[str, typer.Option(help="Service URN, e.g. urn:service:sos.")],
    id_attr: Annotated[str, typer.Option("--id-attr", help="Attribute holding each boundary's id.")],
    name_attr: Annotated[str, typer.Option("--name-attr", help="Attribute holding each boundary's name.")],
    uri_attr: Annotated[
        Optional[str], typer.Option("--uri-attr", help="Attribute holding the service URI.")
    ] = None,
    uri_template: Annotated[
        Optional[str],
        typer.Option("--uri-template", help="Build the URI from attributes, e.g. 'sip:{id}@psap.example'."),
    ] = None,
    layer: Annotated[Optional[str], typer.Option(help="Layer of a multi-layer file (GeoPackage).")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the report as JSON here.")] = None,
    outline: Annotated[
        Optional[Path], typer.Option(help="A polygon file of the area the layer must cover.")
    ] = None,
    sliver_m2: Annotated[
        float, typer.Option("--sliver-m2", min=0, help="Overlaps and gaps under this area (m²) are slivers.")
    ] = 1.0,
) -> None:
    """Check one boundary layer: geometry (repaired and reported), ids, URIs, overlaps, gaps.

    Exit 1 if errors remain, 2 if the file cannot be read as a layer."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from firebox.gis.layers import LayerError, load_boundary_layer, read_outline

    console = Console()
    err = Console(stderr=True)
    # Repairs are logged by the library and shown here in the report: without a handler,
    # logging's last resort would print them a second time, through the progress bar.
    gis_log = logging.getLogger("firebox.gis")
    if not gis_log.handlers:
        gis_log.addHandler(logging.NullHandler())
    if not _SERVICE_URN.match(service):
        err.print(f"[red]✗[/red] '{service}' is not a service URN like urn:service:sos.police", highlight=False)
        raise typer.Exit(2)
    if uri_attr is not None and uri_template is not None:
        err.print("[red]✗[/red] give --uri-attr or --uri-template, not both", highlight=False)
        raise typer.Exit(2)

    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
        console=err, transient=True,
    ) as progress:
        task = progress.add_task("starting", total=_STEPS)
        started = [False]

        def on_step(label: str) -> None:
            if started[0]:
                progress.advance(task)
            started[0] = True
            progress.update(task, description=label)

        try:
            area = read_outline(outline) if outline is not None else None
            _, report = load_boundary_layer(
                path, service, id_attr, name_attr, uri_attr=uri_attr, uri_template=uri_template,
                layer=layer, outline=area, sliver_m2=sliver_m2, on_step=on_step,
            )
        except LayerError as exc:
            progress.stop()
            err.print(f"[red]✗[/red] {exc}", highlight=False)
            raise typer.Exit(2) from None
        progress.update(task, completed=_STEPS)

    if report.findings:
        console.print(report.table())
    mark = "[green]✓[/green]" if report.ok else "[red]✗[/red]"
    console.print(f"{mark} {report.summary()}", highlight=False)
    if json_out is not None:
        json_out.write_text(report.to_json() + "\n", encoding="utf-8")
        console.print(f"wrote {json_out}", highlight=False)
    if not report.ok:
        raise typer.Exit(1)
