"""``firebox change``: rule changes on a running node, through its ``/changes`` API.

    firebox change submit bcf rules.yaml --author ops@example --url http://127.0.0.1:7070
    firebox change list --url ...
    firebox change diff CHANGE_ID --url ...
    firebox change stage CHANGE_ID --source carrier-a [--psap boston] --url ...
    firebox change promote CHANGE_ID --url ...
    firebox change rollback CHANGE_ID --reason "answer ratio fell" --url ...

A refused change prints the calls it would have hit and exits 1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Column, Table

__all__ = ["change_app"]

change_app = typer.Typer(help="Safe rule changes: submit, diff, stage (canary), promote, roll back.",
                         no_args_is_help=True)  # fmt: skip
console = Console()
err = Console(stderr=True)

UrlOption = Annotated[str, typer.Option("--url", help="the node's HTTP address serving /changes")]
DEFAULT_URL = "http://127.0.0.1:7070"


def _call(method: str, url: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    import httpx

    try:
        reply = httpx.request(method, url.rstrip("/") + path, json=body, timeout=30.0)
    except httpx.HTTPError as exc:
        err.print(f"[red]cannot reach {url}[/red]: {exc}")
        raise typer.Exit(2) from None
    try:
        data = reply.json()
    except ValueError:
        data = {"detail": reply.text[:500]}
    if reply.status_code >= 400:
        _problem(reply.status_code, data)
        raise typer.Exit(1)
    return data if isinstance(data, dict) else {}


def _problem(status: int, data: dict[str, Any]) -> None:
    err.print(f"[red]{status} {data.get('title', 'error')}[/red]", highlight=False)
    hits = data.get("hits") or []
    if hits:
        err.print(f"change {data.get('changeId')} refused: {data['errors'][0]['detail']}", highlight=False)
        table = Table("call", "source", "action", "rule", "why", title="calls it would have hit")
        for h in hits:
            table.add_row(h["call"], h["source"], h["action"], str(h["rule"]), h["reason"])
        err.print(table)
        return
    for e in data.get("errors") or [{"member": "", "detail": data.get("detail", "")}]:
        err.print(f"  {e['member'] or '(request)'}: {e['detail']}", highlight=False)


def _show(change: dict[str, Any]) -> None:
    scope = change.get("scope")
    where = ""
    if scope:
        where = " on " + ", ".join(scope.get("sources", []) + scope.get("psaps", []))
    console.print(f"[bold]{change['id']}[/bold] {change['kind']} {change['target']} v{change['version']}: "
                  f"[cyan]{change['stage']}[/cyan]{where} - {change['reason']}", highlight=False)  # fmt: skip
    shadow = change.get("shadow") or []
    if isinstance(shadow, list) and shadow:
        table = Table("call", "source", "effect", "before", "after", "rule", title="recent calls treated differently")
        for s in shadow[:50]:
            table.add_row(s["call"], str(s["source"]), s["effect"], s["before"], s["after"], str(s["rule"]))
        console.print(table)


def _rules(path: Path) -> Any:
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        return yaml.safe_load(text)
    return json.loads(text)


@change_app.command("submit")
def submit(
    kind: Annotated[str, typer.Argument(help="bcf or routing")],
    rules: Annotated[Path, typer.Argument(help="the new rule set (YAML or JSON list)", exists=True, dir_okay=False)],
    author: Annotated[str, typer.Option(help="who asks for the change")],
    target: Annotated[Optional[str], typer.Option(help="the policy id the rules are for")] = None,  # noqa: UP045
    url: UrlOption = DEFAULT_URL,
) -> None:
    """Submit a rule set: checked against the invariant, then held in shadow."""
    body: dict[str, Any] = {"kind": kind, "rules": _rules(rules), "author": author}
    if target:
        body["target"] = target
    _show(_call("POST", url, "/changes", body))


@change_app.command("list")
def list_changes(
    target: Annotated[Optional[str], typer.Option(help="only this policy id")] = None,  # noqa: UP045
    stage: Annotated[Optional[str], typer.Option(help="only changes in this stage")] = None,  # noqa: UP045
    url: UrlOption = DEFAULT_URL,
) -> None:
    """The changes, newest first."""
    params = "&".join(f"{k}={v}" for k, v in (("target", target), ("stage", stage)) if v)
    data = _call("GET", url, "/changes" + (f"?{params}" if params else ""))
    table = Table(Column("id", no_wrap=True), "kind", "target", "v", Column("stage", no_wrap=True), "author", "hits",
                  "shadow", "reason")  # fmt: skip
    for c in data["changes"]:
        table.add_row(c["id"], c["kind"], c["target"], str(c["version"]), c["stage"], c["author"], str(c["hits"]),
                      str(c["shadow"]), c["reason"][:60])  # fmt: skip
    console.print(table)


@change_app.command("diff")
def show_diff(change_id: str, url: UrlOption = DEFAULT_URL) -> None:
    """What the change adds, removes and alters, rule by rule."""
    data = _call("GET", url, f"/changes/{change_id}/diff")
    for line in data["lines"]:
        colour = {"+": "green", "-": "red", "~": "yellow"}.get(line[:1], "")
        console.print(f"[{colour}]{line}[/{colour}]" if colour else line, highlight=False, markup=bool(colour))


@change_app.command("stage")
def stage(
    change_id: str,
    source: Annotated[Optional[list[str]], typer.Option(help="canary ingress: a BCF source id")] = None,  # noqa: UP045
    psap: Annotated[Optional[list[str]], typer.Option(help="canary region: a PSAP id (routing)")] = None,  # noqa: UP045
    url: UrlOption = DEFAULT_URL,
) -> None:
    """Shadow -> canary: the new rules for one ingress or region only."""
    _show(_call("POST", url, f"/changes/{change_id}/stage", {"scope": {"sources": source or [], "psaps": psap or []}}))


@change_app.command("promote")
def promote(change_id: str, url: UrlOption = DEFAULT_URL) -> None:
    """Canary -> full: the new rules for every call."""
    _show(_call("POST", url, f"/changes/{change_id}/promote"))


@change_app.command("rollback")
def rollback(
    change_id: str,
    reason: Annotated[str, typer.Option(help="why")] = "rolled back by hand",
    url: UrlOption = DEFAULT_URL,
) -> None:
    """Back to the rules before the change."""
    _show(_call("POST", url, f"/changes/{change_id}/rollback", {"reason": reason}))
