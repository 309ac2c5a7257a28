"""URIs, name-addr values and Via values (RFC 3261 sections 19.1, 20.10, 20.42, 25.1).

These are parsed on demand, not by ``parse_message``: a proxy reads the few it needs.
Escaped characters (``%XX``) are kept as written, so ``str()`` gives back the text that was
parsed (with the scheme, parameter names and the Via transport in canonical case); URI
comparison by the rules of RFC 3261 section 19.1.4 is left to the callers that need it.
Parameter names are lower-cased (they are case-insensitive); a parameter without ``=`` has
the value ``None``; a quoted parameter value keeps its quotes.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from firebox.sip.errors import SipParseError, bad_request, quoted
from firebox.sip.headers import TOKEN_RE

_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
#: Characters that never appear unescaped in a URI (RFC 3986 / RFC 3261 section 25.1).
_URI_FORBIDDEN_RE = re.compile(r'[\x00-\x20\x7f<>"\\^`{|}]')
#: hostname or IPv4address (RFC 3261 section 25.1; ``_`` tolerated as many stacks send it).
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_\-.]*[A-Za-z0-9_.])?")
_PORT_RE = re.compile(r"[0-9]{1,5}")
_VIA_RE = re.compile(
    r"[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*/[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*/[ \t]*"
    r"([A-Za-z0-9\-.!%*_+`'~]+)[ \t]+(\[[^\]\s]*\]|[^\s:;\[\]]+)(?:[ \t]*:[ \t]*([^\s;]*))?"
    r"[ \t]*(;.*)?",
    re.DOTALL,
)

_ESCAPE_RE = re.compile(r"\\(.)", re.DOTALL)

Params = dict[str, str | None]


def _malformed_uri(text: str, detail: str = "") -> SipParseError:
    return bad_request(f"malformed URI {quoted(text)}{detail}")


def _format_params(params: Params) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


@dataclass(slots=True)
class SipUri:
    """A ``sip:`` or ``sips:`` URI (RFC 3261 section 19.1.1).

    ``host`` is a hostname, an IPv4 address or an IPv6 reference in brackets
    (``[2001:db8::1]``); ``params`` are the uri-parameters, ``headers`` the ``?`` headers.
    """

    scheme: str
    host: str
    user: str | None = None
    password: str | None = None
    port: int | None = None
    params: Params = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out += (":", self.password)
            out.append("@")
        out.append(self.host)
        if self.port is not None:
            out += (":", str(self.port))
        out.append(_format_params(self.params))
        if self.headers:
            out += ("?", "&".join(f"{k}={v}" for k, v in self.headers.items()))
        return "".join(out)

    @property
    def transport(self) -> str | None:
        """The ``transport`` parameter, lower case (section 19.1.1), or ``None``."""
        value = self.params.get("transport")
        return value.lower() if value else None

    @property
    def lr(self) -> bool:
        """Whether the URI has the loose-routing ``lr`` parameter (section 19.1.1)."""
        return "lr" in self.params


@dataclass(slots=True)
class AbsoluteUri:
    """Any other absolute URI (RFC 3261 section 19.1 allows them), kept as scheme and the
    opaque rest: ``tel:+15085550100`` (RFC 3966), ``urn:service:sos`` (RFC 5031),
    ``cid:...`` (RFC 2392), ``http(s):...``."""

    scheme: str
    opaque: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.opaque}"


Uri = SipUri | AbsoluteUri


def parse_uri(text: str) -> Uri:
    """Parse a URI (RFC 3261 sections 19.1.1 and 25.1).

    ``sip:``/``sips:`` URIs become ``SipUri`` with user, password, host (IPv6 in
    brackets), port, uri-parameters and headers; any other scheme becomes ``AbsoluteUri``.
    The scheme is lower-cased. Raises ``SipParseError`` (400) naming the fault."""
    s = text.strip()
    scheme, sep, rest = s.partition(":")
    if not sep or not rest or not _SCHEME_RE.fullmatch(scheme):
        raise _malformed_uri(text)
    if _URI_FORBIDDEN_RE.search(s):
        raise _malformed_uri(text, ": forbidden character")
    scheme = scheme.lower()
    if scheme == "sip" or scheme == "sips":
        return _parse_sip_uri(scheme, rest, text)
    return AbsoluteUri(scheme, rest)


def _parse_sip_uri(scheme: str, rest: str, text: str) -> SipUri:
    """The part after ``sip:``: ``[user[:password]@]host[:port][;params][?headers]``."""
    question = rest.find("?")
    at = rest.rfind("@", 0, question) if question >= 0 else rest.rfind("@")
    user = password = None
    if at >= 0:
        user, colon, pw = rest[:at].partition(":")
        password = pw if colon else None
        if not user:
            raise _malformed_uri(text, ": empty user")
        rest = rest[at + 1 :]
    headers: dict[str, str] = {}
    question = rest.find("?")
    if question >= 0:
        rest, header_text = rest[:question], rest[question + 1 :]
        headers = _parse_uri_headers(header_text, text)
    hostport, semi, param_text = rest.partition(";")
    host, port = _parse_hostport(hostport, text)
    params = _parse_uri_params(param_text, text) if semi else {}
    return SipUri(scheme, host, user, password, port, params, headers)


def _parse_hostport(hostport: str, text: str) -> tuple[str, int | None]:
    """``host[:port]`` (RFC 3261 section 25.1) with ``[IPv6]`` references."""
    if hostport.startswith("["):
        close = hostport.find("]")
        if close < 0:
            raise _malformed_uri(text, ": unclosed IPv6 reference")
        host, after = hostport[: close + 1], hostport[close + 1 :]
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise _malformed_uri(text, ": bad IPv6 address") from None
        if after and not after.startswith(":"):
            raise _malformed_uri(text, ": text after IPv6 reference")
        port_text: str | None = after[1:] if after else None
    else:
        host, colon, after = hostport.partition(":")
        port_text = after if colon else None
        if not _HOSTNAME_RE.fullmatch(host):
            raise _malformed_uri(text, ": bad host")
    if port_text is None:
        return host, None
    if not _PORT_RE.fullmatch(port_text) or int(port_text) > 65535:
        raise _malformed_uri(text, ": bad port")
    return host, int(port_text)


def _parse_uri_params(param_text: str, text: str) -> Params:
    """uri-parameters (section 19.1.1): ``name[=value]`` separated by ``;``."""
    params: Params = {}
    for item in param_text.split(";"):
        name, eq, value = item.partition("=")
        if not name:
            raise _malformed_uri(text, ": empty parameter")
        params[name.lower()] = value if eq else None
    return params


def _parse_uri_headers(header_text: str, text: str) -> dict[str, str]:
    """headers (section 19.1.1): ``name=value`` separated by ``&``."""
    headers: dict[str, str] = {}
    for item in header_text.split("&"):
        name, eq, value = item.partition("=")
        if not name or not eq:
            raise _malformed_uri(text, ": bad header")
        headers[name] = value
    return headers


def find_quote_end(s: str, start: int) -> int:
    """Index of the ``"`` closing the quoted string opened at ``s[start]`` (section 25.1,
    with ``\\`` escapes), or -1."""
    i = start + 1
    n = len(s)
    while i < n:
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c == '"':
            return i
        i += 1
    return -1


def split_params(text: str, what: str) -> list[str]:
    """Split ``;a=1;b="x;y"`` into ``['a=1', 'b="x;y"']``: semicolons inside quoted strings
    do not split. ``text`` must be empty or start with ``;`` (after white space)."""
    s = text.strip()
    if not s:
        return []
    if s[0] != ";":
        raise bad_request(f"unexpected text {quoted(s)} in {what}")
    if '"' not in s:
        return s[1:].split(";")
    items: list[str] = []
    start = 1
    i = 1
    n = len(s)
    while i < n:
        c = s[i]
        if c == '"':
            end = find_quote_end(s, i)
            if end < 0:
                raise bad_request(f"unclosed quoted string in {what}")
            i = end + 1
            continue
        if c == ";":
            items.append(s[start:i])
            start = i + 1
        i += 1
    items.append(s[start:])
    return items


def parse_params(text: str, what: str) -> Params:
    """Header parameters (``generic-param``, RFC 3261 section 25.1): names lower-cased,
    values as written (quoted values keep their quotes), ``None`` for a bare name."""
    params: Params = {}
    for item in split_params(text, what):
        name, eq, value = item.partition("=")
        name = name.strip()
        if not TOKEN_RE.fullmatch(name):
            raise bad_request(f"malformed parameter {quoted(item.strip())} in {what}")
        value = value.strip()
        if eq and not value:
            raise bad_request(f"empty value of parameter {quoted(name)} in {what}")
        params[name.lower()] = value if eq else None
    return params


@dataclass(slots=True)
class NameAddr:
    """A From/To/Contact/Route-style value (RFC 3261 section 20.10): optional display name
    (unquoted), the URI and the header parameters (``tag``, ``expires``, ``purpose``...)."""

    display: str | None
    uri: Uri
    params: Params = field(default_factory=dict)

    def __str__(self) -> str:
        if self.display is None:
            head = f"<{self.uri}>"
        else:
            escaped = self.display.replace("\\", "\\\\").replace('"', '\\"')
            head = f'"{escaped}" <{self.uri}>'
        return head + _format_params(self.params)

    @property
    def tag(self) -> str | None:
        """The ``tag`` parameter (section 19.3), or ``None``."""
        return self.params.get("tag")


def parse_name_addr(text: str) -> NameAddr:
    """Parse ``"Display" <uri>;params``, ``Display <uri>;params``, ``<uri>;params`` or the
    bare ``uri;params`` form (RFC 3261 section 20.10: without ``<>`` every ``;`` starts a
    header parameter). Raises ``SipParseError`` (400)."""
    s = text.strip()
    if not s:
        raise bad_request("empty address")
    display: str | None = None
    if s[0] == '"':
        end = find_quote_end(s, 0)
        if end < 0:
            raise bad_request(f"unclosed display name in {quoted(s)}")
        display = _ESCAPE_RE.sub(r"\1", s[1:end])
        rest = s[end + 1 :].lstrip()
        if not rest.startswith("<"):
            raise bad_request(f"missing <URI> after display name in {quoted(s)}")
    else:
        lt = s.find("<")
        if lt < 0:
            uri_text, semi, param_text = s.partition(";")
            return NameAddr(None, parse_uri(uri_text), parse_params(semi + param_text, "address"))
        display = s[:lt].strip() or None
        rest = s[lt:]
    gt = rest.find(">")
    if gt < 0:
        raise bad_request(f"unclosed <URI> in {quoted(s)}")
    return NameAddr(display, parse_uri(rest[1:gt]), parse_params(rest[gt + 1 :], "address"))


@dataclass(slots=True)
class Via:
    """One Via value (RFC 3261 section 20.42): ``SIP/2.0/UDP host:port;branch=...``."""

    transport: str
    host: str
    port: int | None = None
    params: Params = field(default_factory=dict)
    protocol: str = "SIP/2.0"

    def __str__(self) -> str:
        port = "" if self.port is None else f":{self.port}"
        return f"{self.protocol}/{self.transport} {self.host}{port}{_format_params(self.params)}"

    @property
    def branch(self) -> str | None:
        """The ``branch`` parameter (section 8.1.1.7), or ``None``."""
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        """The ``received`` parameter (section 18.2.1), or ``None``."""
        return self.params.get("received")

    @property
    def rport(self) -> int | None:
        """The port in the ``rport`` parameter (RFC 3581 section 4), ``None`` when the
        parameter is absent or empty (a request for it: see ``wants_rport``)."""
        value = self.params.get("rport")
        if value and value.isascii() and value.isdigit() and len(value) <= 5:
            return int(value)
        return None

    @property
    def wants_rport(self) -> bool:
        """Whether the client asked for ``rport`` (RFC 3581 section 3)."""
        return "rport" in self.params


def parse_via(text: str) -> Via:
    """Parse one Via value (RFC 3261 section 20.42; white space around ``/`` and ``:`` is
    allowed, section 25.1). The transport is upper-cased. Raises ``SipParseError`` (400)."""
    m = _VIA_RE.fullmatch(text.strip())
    if m is None:
        raise bad_request(f"malformed Via {quoted(text.strip())}")
    name, version, transport, host, port_text, param_text = m.groups()
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise bad_request(f"malformed Via {quoted(text.strip())}: bad IPv6 address") from None
    elif not _HOSTNAME_RE.fullmatch(host):
        raise bad_request(f"malformed Via {quoted(text.strip())}: bad host")
    port = None
    if port_text is not None:
        if not _PORT_RE.fullmatch(port_text) or int(port_text) > 65535:
            raise bad_request(f"malformed Via {quoted(text.strip())}: bad port")
        port = int(port_text)
    params = parse_params(param_text or "", "Via")
    return Via(transport.upper(), host, port, params, f"{name.upper()}/{version}")
