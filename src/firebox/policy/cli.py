"""``firebox policy``: run a Policy Store, store a signed policy in one, read one back
(NENA-STA-010.3 section 4.9).

    firebox policy serve --db sqlite:///policies.db --listen 127.0.0.1:7090 --trust ca.pem
    firebox policy put nights.yaml --url http://127.0.0.1:7090 --key owner.key --cert owner.pem
    firebox policy get nights --url http://127.0.0.1:7090 [--version 2] [--payload]

Heavy imports happen inside the commands so that ``firebox --help`` stays instant.
"""

from __future__ import annotations

import time

import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

__all__ = ["policy_app"]

policy_app = typer.Typer(help="The i3 Policy Store: serve it, store a signed policy, read one back.",
                         no_args_is_help=True)  # fmt: skip
console = Console()
err = Console(stderr=True)

UrlOption = Annotated[str, typer.Option("--url", help="the Policy Store, e.g. http://127.0.0.1:7090")]


def _listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise typer.BadParameter(f"expected HOST:PORT, not {value!r}")
    return host.strip("[]"), int(port)


@policy_app.command("serve")
def serve(
    db: Annotated[str, typer.Option("--db", help="sqlite:///relative.db, sqlite:////abs.db or postgresql://...")]
    = "sqlite:///firebox-policies.db",
    listen: Annotated[str, typer.Option(help="HOST:PORT to listen on")] = "127.0.0.1:7090",
    trust: Annotated[Optional[list[Path]], typer.Option(help="PEM file of CA certificates x5c chains must lead to")] = None,  # noqa: UP045
    owner_key: Annotated[Optional[list[str]], typer.Option(  # noqa: UP045
        "--owner-key", help="DOMAIN=KEY.pem: a public key (or certificate) that may sign for DOMAIN")] = None,
    allow_unsigned: Annotated[bool, typer.Option("--allow-unsigned/--no-allow-unsigned",
                                                 help="accept unsigned (alg none) policies (a lab only)")] = False,
) -> None:  # fmt: skip
    """Serve the Policy Store's REST interface (/Policies, /Versions, /openapi.json)."""
    import uvicorn
    from cryptography import x509

    from firebox.policy.app import PolicyService
    from firebox.policy.store import open_store

    host, port = _listen(listen)
    anchors = [c for p in trust for c in x509.load_pem_x509_certificates(p.read_bytes())] if trust else None
    keys: dict[str, list[Any]] = {}
    for item in owner_key or []:
        domain, _, path = item.partition("=")
        if not domain or not path:
            raise typer.BadParameter(f"expected DOMAIN=KEY.pem, not {item!r}", param_hint="--owner-key")
        keys.setdefault(domain.lower(), []).append(_public_key(Path(path)))
    store = open_store(db)
    try:
        app = PolicyService(store, trust=anchors, owner_keys=keys, allow_unsigned=allow_unsigned).app()
        err.print(f"Policy Store on http://{host}:{port} storing in {_safe(db)}"
                  + ("" if anchors else " (no --trust: certificates are taken at their word)"), highlight=False)  # fmt: skip
        uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)
    finally:
        store.close()


def _public_key(path: Path) -> Any:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    data = path.read_bytes()
    if b"CERTIFICATE" in data:
        return x509.load_pem_x509_certificate(data).public_key()
    return serialization.load_pem_public_key(data)


def _safe(url: str) -> str:
    """The URL without a password."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))
    return url


def _load_document(path: Path) -> dict[str, Any]:
    import json

    import yaml

    text = path.read_text(encoding="utf-8")
    data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    if not isinstance(data, dict):
        err.print(f"{path}: a policy document must be a mapping (policyOwner, policyType, policyId, policyRules, ...)")
        raise typer.Exit(2)
    return data


def _report(reply: Any) -> None:
    """A problem JSON, member by member."""
    try:
        data = reply.json()
    except ValueError:
        err.print(f"[red]✗[/red] HTTP {reply.status_code}: {reply.text[:300]}", highlight=False)
        return
    err.print(f"[red]✗[/red] HTTP {reply.status_code} {data.get('title', '')}", highlight=False)
    for e in data.get("errors", []) or []:
        err.print(f"  {e.get('member') or '(document)'}: {e.get('detail')}", highlight=False)


@policy_app.command("put")
def put(
    file: Annotated[Path, typer.Argument(help="the policy document (YAML or JSON)", exists=True, dir_okay=False)],
    url: UrlOption,
    key: Annotated[Optional[Path], typer.Option(help="the signer's Ed25519/Ed448 private key (PEM)")] = None,  # noqa: UP045
    cert: Annotated[Optional[Path], typer.Option(help="its certificate, then its issuers (PEM): the x5c chain")] = None,  # noqa: UP045
    unsigned: Annotated[bool, typer.Option("--unsigned", help="alg none (only for a store that allows it)")] = False,
) -> None:
    """Sign a policy document and store it (a new policy, or the next version of one).

    A new policy is POSTed; an existing one gets a PUT with If-Match the version it replaces."""
    import httpx
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from firebox import jws as jwslib

    if unsigned == (key is not None) or (key is None) != (cert is None):
        err.print("give --key and --cert, or --unsigned")
        raise typer.Exit(2)
    payload = _load_document(file)
    signer: Any = None
    chain: list[x509.Certificate] | None = None
    if key is not None and cert is not None:
        signer = serialization.load_pem_private_key(key.read_bytes(), password=None)
        chain = x509.load_pem_x509_certificates(cert.read_bytes())
    try:
        # iat: when it was signed; the store refuses to replace a version with an older one.
        token = jwslib.sign(payload, signer, x5c=chain, extra={"iat": round(time.time(), 3)})
    except (TypeError, ValueError) as exc:
        err.print(f"cannot sign: {exc}", highlight=False)
        raise typer.Exit(2) from None
    content = jwslib.serialize(token)
    base = url.rstrip("/")
    policy_id = payload.get("policyId") or payload.get("policyName")
    try:
        with httpx.Client(timeout=10) as http:
            reply = http.post(f"{base}/Policies", content=content, headers={"Content-Type": "application/json"})
            if reply.status_code == 409 and isinstance(policy_id, str):
                current = http.get(f"{base}/Policies/{policy_id}")
                match = {"If-Match": current.headers["etag"]} if current.status_code == 200 else {}
                reply = http.put(f"{base}/Policies/{policy_id}", content=content,
                                 headers={"Content-Type": "application/json", **match})  # fmt: skip
    except httpx.HTTPError as exc:
        err.print(f"cannot reach {url}: {exc}", highlight=False)
        raise typer.Exit(1) from None
    if reply.status_code not in (200, 201):
        _report(reply)
        raise typer.Exit(1)
    data = reply.json()
    console.print(f"[green]✓[/green] {data['policyId']} version {data['version']} stored", highlight=False)


@policy_app.command("get")
def get(
    policy_id: Annotated[str, typer.Argument(help="the policyId")],
    url: UrlOption,
    version: Annotated[Optional[int], typer.Option(help="a given version, not the current one")] = None,  # noqa: UP045
    payload: Annotated[bool, typer.Option("--payload", help="print the policy document, not the JWS")] = False,
) -> None:
    """Print a policy as stored (its JWS, byte for byte), or its document with --payload."""
    import json
    from urllib.parse import quote

    import httpx

    from firebox import jws as jwslib

    path = f"{url.rstrip('/')}/Policies/{quote(policy_id, safe='')}"
    if version is not None:
        path += f"/versions/{version}"
    try:
        reply = httpx.get(path, timeout=10)
    except httpx.HTTPError as exc:
        err.print(f"cannot reach {url}: {exc}", highlight=False)
        raise typer.Exit(1) from None
    if reply.status_code != 200:
        _report(reply)
        raise typer.Exit(1)
    if payload:
        doc = json.loads(reply.content)
        decoded = json.loads(jwslib.b64url_decode(doc["payload"], "payload"))
        sys.stdout.write(json.dumps(decoded, indent=2, ensure_ascii=False) + "\n")
    else:
        sys.stdout.buffer.write(reply.content)
    sys.stdout.flush()
    err.print(f"{policy_id} version {reply.headers.get('etag', '?').strip(chr(34)).lstrip('v')}", highlight=False)
