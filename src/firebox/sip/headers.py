"""SIP header fields: an ordered multi-map of header lines (RFC 3261 section 7.3).

Names are case-insensitive (section 7.3.1) and the compact forms of section 7.3.3 (and of
later RFCs) stand for their full names, so ``headers.get("i")`` and ``headers.get("call-id")``
both read ``Call-ID``. Every line is kept, in order, with its value as received (leading and
trailing white space removed, folded lines joined by one space). Header fields whose grammar
is a comma-separated list (``Via``, ``Route``, ``Contact``, ``Supported``, ...) may carry
several values on one line (section 7.3.1); ``get_all`` splits them, leaving alone commas
inside a quoted string or inside ``<...>``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from firebox.sip.errors import quoted

#: token (RFC 3261 section 25.1): the characters of a header name or a method.
TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")

#: Full names as they are written on the wire.
_CANONICAL = (
    "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Accept-Resource-Priority",
    "Alert-Info", "Allow", "Allow-Events", "Authentication-Info", "Authorization", "Call-ID",
    "Call-Info", "Contact", "Content-Disposition", "Content-Encoding", "Content-ID",
    "Content-Language", "Content-Length", "Content-Type", "CSeq", "Date", "Diversion",
    "Error-Info", "Event", "Expires", "Feature-Caps", "Geolocation", "Geolocation-Error",
    "Geolocation-Routing", "History-Info", "Identity", "In-Reply-To", "Info-Package",
    "Max-Forwards", "MIME-Version", "Min-Expires", "Min-SE", "Organization",
    "P-Access-Network-Info", "P-Asserted-Identity", "P-Preferred-Identity", "Path", "Priority",
    "Privacy", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require", "RAck", "Reason",
    "Record-Route", "Recv-Info", "Refer-To", "Referred-By", "Reject-Contact", "Replaces",
    "Reply-To", "Request-Disposition", "Require", "Resource-Priority", "Retry-After", "Route",
    "RSeq", "Security-Client", "Security-Server", "Security-Verify", "Server", "Service-Route",
    "Session-Expires", "Session-ID", "SIP-ETag", "SIP-If-Match", "Subject",
    "Subscription-State", "Supported", "Target-Dialog", "Timestamp", "To", "Unsupported",
    "User-Agent", "Via", "Warning", "WWW-Authenticate",
)  # fmt: skip

#: Compact forms (RFC 3261 section 7.3.3 and the RFCs that registered the others).
COMPACT_FORMS = {
    "a": "Accept-Contact",  # RFC 3841
    "b": "Referred-By",  # RFC 3892
    "c": "Content-Type",
    "d": "Request-Disposition",  # RFC 3841
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",  # RFC 3841
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "o": "Event",  # RFC 6665
    "r": "Refer-To",  # RFC 3515
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",  # RFC 6665
    "v": "Via",
    "x": "Session-Expires",  # RFC 4028
    "y": "Identity",  # RFC 8224
}

#: Header fields whose grammar is ``value *(COMMA value)`` (RFC 3261 section 7.3.1), by key.
LIST_KEYS = frozenset(
    name.lower()
    for name in (
        "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language",
        "Accept-Resource-Priority", "Alert-Info", "Allow", "Allow-Events", "Call-Info",
        "Contact", "Content-Encoding", "Content-Language", "Diversion", "Error-Info",
        "Geolocation", "History-Info", "In-Reply-To", "P-Asserted-Identity",
        "P-Preferred-Identity", "Path", "Proxy-Require", "Reason", "Record-Route",
        "Reject-Contact", "Require", "Resource-Priority", "Route", "Security-Client",
        "Security-Server", "Security-Verify", "Service-Route", "Supported", "Unsupported",
        "Via", "Warning",
    )
)  # fmt: skip

#: name as written (canonical, lower case, compact in both cases) -> (key, canonical name)
NAMES: dict[str, tuple[str, str]] = {}
for _name in (*_CANONICAL, "From"):
    NAMES[_name] = NAMES[_name.lower()] = (_name.lower(), _name)
for _short, _full in COMPACT_FORMS.items():
    NAMES[_short] = NAMES[_short.upper()] = (_full.lower(), _full)
del _name, _short, _full


def name_info(name: str) -> tuple[str, str]:
    """``(key, canonical name)`` of a header name: the key is the lower-case full name.

    Raises ``ValueError`` when ``name`` is not a token (RFC 3261 section 25.1)."""
    info = NAMES.get(name)
    if info is None:
        info = NAMES.get(name.lower())
        if info is None:
            if not TOKEN_RE.fullmatch(name):
                raise ValueError(f"header name {quoted(name)} is not a token")
            info = (name.lower(), name)
    return info


def header_key(name: str) -> str:
    """The lookup key of a header name (lower-case full name), without validating it."""
    info = NAMES.get(name)
    if info is not None:
        return info[0]
    lower = name.lower()
    info = NAMES.get(lower)
    return info[0] if info is not None else lower


def split_list(value: str) -> list[str]:
    """Split a comma-separated header value (RFC 3261 section 7.3.1) into its values.

    Commas inside a quoted string (with backslash escapes, section 25.1) or inside
    ``<...>`` (a URI, section 20) do not split; empty values are dropped."""
    if "," not in value:
        return [value] if value else []
    if '"' not in value and "<" not in value:
        return [v for part in value.split(",") if (v := part.strip())]
    out: list[str] = []
    start = 0
    in_quotes = False
    in_angle = False
    escaped = False
    for i, c in enumerate(value):
        if in_quotes:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_quotes = False
        elif c == '"':
            in_quotes = True
        elif c == "<":
            in_angle = True
        elif c == ">":
            in_angle = False
        elif c == "," and not in_angle:
            if v := value[start:i].strip():
                out.append(v)
            start = i + 1
    if v := value[start:].strip():
        out.append(v)
    return out


def _check_value(value: str) -> str:
    if "\r" in value or "\n" in value or "\x00" in value:
        raise ValueError(f"header value {quoted(value)} contains CR, LF or NUL")
    return value.strip(" \t")


class Headers:
    """Ordered multi-map of SIP header lines with case-insensitive names (RFC 3261 7.3).

    Each line is ``(key, name, value)``: ``key`` the lower-case full name, ``name`` the
    canonical spelling written by ``serialize`` (full name for compact forms), ``value`` the
    text after the colon. Equality compares keys and values line by line, in order.
    """

    __slots__ = ("_first", "_items")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str, str]] = []
        self._first: dict[str, str] | None = None
        for name, value in items:
            self.add(name, value)

    @classmethod
    def _from_parsed(
        cls, items: list[tuple[str, str, str]], first: dict[str, str] | None
    ) -> Headers:
        """Wrap lines made by the parser, with the first-line index it built on the way
        (``None``: built on first use)."""
        headers = cls.__new__(cls)
        headers._items = items
        headers._first = first
        return headers

    def _index(self) -> dict[str, str]:
        first = self._first
        if first is None:
            first = {}
            for key, _, value in self._items:
                if key not in first:
                    first[key] = value
            self._first = first
        return first

    # -- reading -------------------------------------------------------------------------

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name``: for list headers the first comma-separated value
        (the top ``Via``, section 8.1.1.7), otherwise the whole first line."""
        key = header_key(name)
        value = self._index().get(key)
        if value is None:
            return default
        if key in LIST_KEYS and ("," in value or not value):
            values = self.get_all(name)
            return values[0] if values else default
        return value

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name`` in order; list headers are split on commas (7.3.1)."""
        key = header_key(name)
        lines = [value for k, _, value in self._items if k == key]
        if key not in LIST_KEYS:
            return lines
        out: list[str] = []
        for line in lines:
            out.extend(split_list(line))
        return out

    def get_lines(self, name: str) -> list[str]:
        """The value of each line of ``name``, unsplit."""
        key = header_key(name)
        return [value for k, _, value in self._items if k == key]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and header_key(name) in self._index()

    def __iter__(self) -> Iterator[tuple[str, str]]:
        """``(name, value)`` for each line, in order."""
        return ((name, value) for _, name, value in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> list[tuple[str, str]]:
        """``(name, value)`` for each line, in order."""
        return [(name, value) for _, name, value in self._items]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        a, b = self._items, other._items
        return len(a) == len(b) and all(
            x[0] == y[0] and x[2] == y[2] for x, y in zip(a, b, strict=True)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Headers({self.items()!r})"

    def copy(self) -> Headers:
        """An independent copy."""
        return Headers._from_parsed(list(self._items), dict(self._index()))

    # -- changing -------------------------------------------------------------------------

    def add(self, name: str, value: str) -> None:
        """Append a line ``name: value``. Raises ``ValueError`` for a name that is not a
        token or a value holding CR, LF or NUL (they would break the message framing)."""
        key, canonical = name_info(name)
        self._items.append((key, canonical, _check_value(value)))
        self._first = None

    def insert_first(self, name: str, value: str) -> None:
        """Insert a line before the first line of ``name`` (at the top when there is none):
        how a proxy adds its ``Via`` (RFC 3261 16.6 step 8) or ``Record-Route`` (step 4)."""
        key, canonical = name_info(name)
        value = _check_value(value)
        at = next((i for i, item in enumerate(self._items) if item[0] == key), 0)
        self._items.insert(at, (key, canonical, value))
        self._first = None

    def set(self, name: str, value: str) -> None:
        """Replace every line of ``name`` by one line, where the first one was (appended
        when there was none)."""
        key, canonical = name_info(name)
        value = _check_value(value)
        items: list[tuple[str, str, str]] = []
        done = False
        for item in self._items:
            if item[0] != key:
                items.append(item)
            elif not done:
                items.append((key, canonical, value))
                done = True
        if not done:
            items.append((key, canonical, value))
        self._items = items
        self._first = None

    def remove(self, name: str) -> int:
        """Remove every line of ``name``; return how many there were."""
        key = header_key(name)
        before = len(self._items)
        self._items = [item for item in self._items if item[0] != key]
        self._first = None
        return before - len(self._items)

    def pop_first(self, name: str) -> str | None:
        """Remove and return the first value of ``name`` (``None`` when absent).

        For a list header whose first line holds several comma-separated values, only the
        first value is removed and the others stay on that line: how a proxy removes the top
        ``Via`` of a response (RFC 3261 16.7 step 3) or a ``Route`` (16.4, 16.12)."""
        key = header_key(name)
        for i, (k, canonical, value) in enumerate(self._items):
            if k != key:
                continue
            if key in LIST_KEYS:
                values = split_list(value)
                if not values:
                    continue
                if len(values) > 1:
                    self._items[i] = (k, canonical, ", ".join(values[1:]))
                else:
                    del self._items[i]
                self._first = None
                return values[0]
            del self._items[i]
            self._first = None
            return value
        return None
