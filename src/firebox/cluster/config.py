"""The ``cluster:`` section of a deployment file: several firebox nodes serving one
deployment, active-active (issue 8).

```yaml
cluster:
  name: core.example.net          # the SIP host carriers and PSAPs use (RFC 3263)
  node_id: node-a                 # this node (env FIREBOX_NODE_ID overrides)
  database: postgresql://postgres@127.0.0.1:5432/firebox
  nats: nats://127.0.0.1:4222
  heartbeat_seconds: 1.0
  nodes:
    - {id: node-a, sip: 127.0.0.1:5060, http: 127.0.0.1:8080, priority: 10, weight: 50}
    - {id: node-b, sip: 127.0.0.1:5062, http: 127.0.0.1:8082, priority: 10, weight: 50}
```

``priority`` and ``weight`` have the meaning of a DNS SRV record's (RFC 2782): lower
priority first, weight shares the load among nodes of the same priority. Without the section
a deployment is one node with the in-process bus.
"""

from __future__ import annotations

import os
import re
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["ClusterConfig", "ClusterNodeConfig", "NODE_ID_ENV", "split_hostport"]

#: Environment variable naming this node; overrides ``cluster.node_id``.
NODE_ID_ENV: Final = "FIREBOX_NODE_ID"

# host:port with host a name, an IPv4 address or a bracketed IPv6 address.
_HOSTPORT: Final = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.\-]*[A-Za-z0-9])?):(\d{1,5})$")
# Node ids become NATS KV keys and subject tokens: keep them to what both allow.
_NODE_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,62}$")


def split_hostport(value: str) -> tuple[str, int]:
    """``"127.0.0.1:5060"`` -> ``("127.0.0.1", 5060)``; ``"[::1]:5060"`` -> ``("::1", 5060)``."""
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


def _check_hostport(value: str) -> str:
    value = value.strip()
    match = _HOSTPORT.match(value)
    if match is None or not 0 < int(match.group(1)) < 65536:
        raise ValueError(f"'{value}' is not host:port (port 1-65535)")
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClusterNodeConfig(_Model):
    """One node of the cluster: its SIP and HTTP listen addresses and its SRV figures."""

    id: str
    sip: str
    http: str
    priority: int = Field(10, ge=0, le=65535)
    weight: int = Field(50, ge=0, le=65535)

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not _NODE_ID.match(value):
            raise ValueError(f"'{value}' is not a node id (letters, digits, '-' and '_', at most 63)")
        return value

    @field_validator("sip", "http")
    @classmethod
    def _listen(cls, value: str) -> str:
        return _check_hostport(value)


class ClusterConfig(_Model):
    """The cluster this node is part of. ``node_id`` must be one of ``nodes``' ids."""

    name: str
    node_id: str
    database: str | None = None
    nats: str = "nats://127.0.0.1:4222"
    heartbeat_seconds: float = Field(1.0, gt=0, le=60)
    nodes: list[ClusterNodeConfig] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        value = value.strip().rstrip(".")
        if not value or not re.match(r"^[A-Za-z0-9.\-]+$", value):
            raise ValueError(f"'{value}' is not a host name")
        return value.lower()

    @field_validator("nats")
    @classmethod
    def _nats(cls, value: str) -> str:
        for url in value.split(","):
            if not re.match(r"^(nats|tls|ws|wss)://", url.strip()):
                raise ValueError(f"'{url}' is not a nats:// URL")
        return value

    @field_validator("database")
    @classmethod
    def _database(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^postgres(ql)?://", value):
            raise ValueError(f"'{value}' is not a postgresql:// URL")
        return value

    @model_validator(mode="before")
    @classmethod
    def _env_node_id(cls, data: object) -> object:
        # The same deployment file serves every node; each host says which one it is.
        override = os.environ.get(NODE_ID_ENV)
        if override and isinstance(data, dict):
            data = {**data, "node_id": override}
        return data

    @model_validator(mode="after")
    def _nodes(self) -> ClusterConfig:
        ids = [n.id for n in self.nodes]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"nodes: duplicate id {', '.join(dupes)}")
        if self.node_id not in ids:
            raise ValueError(f"node_id: '{self.node_id}' is not one of the nodes ({', '.join(ids)})")
        for attr in ("sip", "http"):
            seen: dict[str, str] = {}
            for n in self.nodes:
                where = getattr(n, attr)
                if where in seen:
                    raise ValueError(f"nodes: {n.id} and {seen[where]} share the {attr} address {where}")
                seen[where] = n.id
        return self

    @property
    def this(self) -> ClusterNodeConfig:
        """This node's entry."""
        return next(n for n in self.nodes if n.id == self.node_id)

    def node(self, node_id: str) -> ClusterNodeConfig | None:
        return next((n for n in self.nodes if n.id == node_id), None)
