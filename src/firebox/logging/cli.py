"""``firebox logs``: run a Logging Service, check its hash chain, tell one call's story
(NENA-STA-010.3 section 4.12).

    firebox logs serve --db sqlite:///logs.db --listen 127.0.0.1:7080
    firebox logs verify --db postgresql://postgres@127.0.0.1/firebox
    firebox logs call urn:emergency:uid:callid:...:bcf.example.net --url http://127.0.0.1:7080

Heavy imports happen inside the commands so that ``firebox --help`` stays instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

__all__ = ["logs_app"]

logs_app = typer.Typer(help="The i3 Logging Service: serve it, verify its hash chain, show a call.",
                       no_args_is_help=True)  # fmt: skip
console = Console()
err = Console(stderr=True)

DbOption = Annotated[str, typer.Option("--db", help="sqlite:///relative.db, sqlite:////abs.db or postgresql://...")]


def _listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise typer.BadParameter(f"expected HOST:PORT, not {value!r}")
    return host.strip("[]"), int(port)


@logs_app.command("serve")
def serve(
    db: DbOption = "sqlite:///firebox-logs.db",
    listen: Annotated[str, typer.Option(help="HOST:PORT to listen on")] = "127.0.0.1:7080",
    fqdn: Annotated[str, typer.Option(help="this service's domain name, in the logEventIds it assigns")] = "localhost",
    allow_none: Annotated[bool, typer.Option("--allow-none/--no-allow-none", help="accept unsigned (alg none) events")] = True,
    trust: Annotated[Optional[list[Path]], typer.Option(help="PEM file of CA certificates x5c chains must lead to")] = None,  # noqa: UP045
) -> None:
    """Serve the Logging Service's REST interface (POST/GET /LogEvents, ..., /Versions)."""
    import uvicorn
    from cryptography import x509

    from firebox.logging.service import LoggingService
    from firebox.logging.store import open_store

    host, port = _listen(listen)
    anchors = [c for p in trust for c in x509.load_pem_x509_certificates(p.read_bytes())] if trust else None
    store = open_store(db)
    try:
        app = LoggingService(store, fqdn=fqdn, allow_none=allow_none, trust=anchors).app()
        err.print(f"Logging Service on http://{host}:{port} storing in {_safe(db)}", highlight=False)
        uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)
    finally:
        store.close()


def _safe(url: str) -> str:
    """The URL without a password."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


@logs_app.command("verify")
def verify(
    db: DbOption,
    anchor: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(help="SEQUENCE:HASH printed by an earlier verify; the chain must still hold it"),
    ] = None,
) -> None:
    """Walk the hash chain; exit 1 naming the first broken link (sequence and logEventId)."""
    from firebox.logging.store import open_store

    with open_store(db) as store:
        count = store.count()
        broken = store.verify()
        head = store.head()
        missed = []
        for a in anchor or []:
            seq, _, want = a.partition(":")
            if not seq.isdigit() or not want:
                raise typer.BadParameter(f"expected SEQUENCE:HASH, not {a!r}", param_hint="--anchor")
            if store.hash_at(int(seq)) != want.lower():
                missed.append(a)
    if broken is not None:
        err.print(f"[red]✗[/red] hash chain broken at {broken}", highlight=False)
        raise typer.Exit(1)
    if missed:
        for a in missed:
            err.print(f"[red]✗[/red] anchor {a} is not in the chain: rewritten or cut back since", highlight=False)
        raise typer.Exit(1)
    console.print(f"[green]✓[/green] {count} log events, the hash chain verifies", highlight=False)
    console.print(f"head {head[0]}:{head[1]}", highlight=False)


@logs_app.command("call")
def call(
    call_id: Annotated[str, typer.Argument(help="urn:emergency:uid:callid:...")],
    db: Annotated[Optional[str], typer.Option("--db", help="read the store directly")] = None,  # noqa: UP045
    url: Annotated[Optional[str], typer.Option("--url", help="ask a Logging Service")] = None,  # noqa: UP045
) -> None:
    """One call's whole story as a timeline: signalling, location/LoST, route, answer, release."""
    from rich.table import Table

    from firebox.logging.timeline import timeline

    if (db is None) == (url is None):
        err.print("give exactly one of --db and --url")
        raise typer.Exit(2)
    containers: list[dict] = []
    if db is not None:
        from firebox.logging.store import open_store

        with open_store(db) as store:
            containers = [{"logEventId": e.log_event_id, "logEvent": e.jws_object()} for e in store.conversation(call_id)]
    else:
        from urllib.parse import quote

        import httpx

        assert url is not None
        try:
            reply = httpx.get(f"{url.rstrip('/')}/Conversations/{quote(call_id, safe=':')}", timeout=10)
        except httpx.HTTPError as exc:
            err.print(f"cannot reach {url}: {exc}", highlight=False)
            raise typer.Exit(1) from None
        if reply.status_code == 200:
            containers = reply.json()["logEventContainers"]
        elif reply.status_code != 404:
            err.print(f"{url} answered {reply.status_code}: {reply.text[:300]}", highlight=False)
            raise typer.Exit(1)
    steps = timeline(containers)
    if not steps:
        err.print(f"no log event of call {call_id}", highlight=False)
        raise typer.Exit(1)
    t0 = next((s.when for s in steps if s.when is not None), None)
    colours = {"signalling": "cyan", "location/LoST": "magenta", "route": "yellow", "answer": "green",
               "release": "red", "call": "bold"}  # fmt: skip
    table = Table(title=f"call {call_id}", title_justify="left", show_lines=False)
    for name in ("time", "+s", "element", "stage", "what", "signature"):
        table.add_column(name, overflow="fold")
    for s in steps:
        rel = f"{(s.when - t0).total_seconds():.3f}" if s.when is not None and t0 is not None else ""
        colour = colours.get(s.stage, "white")
        table.add_row(s.timestamp, rel, s.element, f"[{colour}]{s.stage}[/{colour}]", s.summary, s.signature)
    console.print(table)
