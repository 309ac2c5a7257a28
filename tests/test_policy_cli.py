"""``firebox policy serve | put | get`` (NENA-STA-010.3 section 4.9): the store served as its
own process, a YAML policy document signed with a PEM key and certificate chain and stored
(then its next version), read back byte for byte and as its document."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from typer.testing import CliRunner

from firebox import jws as jwslib
from firebox.cli import app
from firebox.logging.testing import free_port
from firebox.policy.testing import Signer

runner = CliRunner()
SIGNER = Signer("ed25519", cn="psap.example.net")
STRANGER = Signer("ed25519", cn="psap.example.net")  # same name, a CA the store does not trust


def pem_files(tmp_path: Path, signer: Signer, name: str) -> tuple[Path, Path]:
    assert signer.key is not None and signer.x5c is not None
    key, cert = tmp_path / f"{name}.key", tmp_path / f"{name}.pem"
    key.write_bytes(signer.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))  # fmt: skip
    cert.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in signer.x5c))
    return key, cert


@pytest.fixture
def served(tmp_path) -> Iterator[str]:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(SIGNER.ca.public_bytes(serialization.Encoding.PEM))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "firebox.cli", "policy", "serve", "--db", f"sqlite:///{tmp_path}/p.db",
         "--listen", f"127.0.0.1:{port}", "--trust", str(ca)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{url}/Versions", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def test_put_and_get(served, tmp_path):
    key, cert = pem_files(tmp_path, SIGNER, "owner")
    doc = tmp_path / "nights.yaml"
    doc.write_text(
        "policyOwner: psap.example.net\npolicyType: OriginationRoutePolicy\npolicyId: nights\npolicyRules:\n"
        "  - {id: to-a, priority: 10, actions: [{type: route, uri: 'sip:queue@a.example.net'}]}\n"
    )
    first = runner.invoke(app, ["policy", "put", str(doc), "--url", served, "--key", str(key), "--cert", str(cert)])
    assert first.exit_code == 0, first.output
    assert "nights version 1 stored" in first.stdout
    second = runner.invoke(app, ["policy", "put", str(doc), "--url", served, "--key", str(key), "--cert", str(cert)])
    assert second.exit_code == 0 and "nights version 2 stored" in second.stdout, second.output

    got = runner.invoke(app, ["policy", "get", "nights", "--url", served])
    assert got.exit_code == 0 and got.stdout_bytes == httpx.get(f"{served}/Policies/nights").content
    assert jwslib.verify(got.stdout_bytes, trust=[SIGNER.ca]).payload["policyId"] == "nights"
    one = runner.invoke(app, ["policy", "get", "nights", "--url", served, "--version", "1", "--payload"])
    assert one.exit_code == 0 and json.loads(one.stdout)["policyRules"][0]["id"] == "to-a"

    # refused: a chain the store does not trust, a bad rule; both named
    other_key, other_cert = pem_files(tmp_path, STRANGER, "stranger")
    refused = runner.invoke(app, ["policy", "put", str(doc), "--url", served, "--key", str(other_key),
                                     "--cert", str(other_cert)])  # fmt: skip
    assert refused.exit_code == 1 and "434" in refused.output and "x5c" in refused.output
    doc.write_text(doc.read_text().replace("priority: 10", "priority: ten"))
    bad = runner.invoke(app, ["policy", "put", str(doc), "--url", served, "--key", str(key), "--cert", str(cert)])
    assert bad.exit_code == 1 and "policyRules[0].priority" in bad.output
    missing = runner.invoke(app, ["policy", "get", "nope", "--url", served])
    assert missing.exit_code == 1 and "404" in missing.output

