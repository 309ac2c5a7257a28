"""i3 logging (NENA-STA-010.3 section 4.12): log events, and their reliable delivery to one or
more Logging Services.

* ``firebox.logging.events``: the log event types and members (section 4.12.3), JSON
  round trips, validation naming every wrong member, i3 identifiers.
* ``firebox.logging.spool``: the durable on-disk spool (nothing accepted is ever lost).
* ``firebox.logging.sender``: ``SenderCore`` (sans-I/O: what to send where, retries with
  backoff) and ``LogSender`` (the asyncio/httpx adapter POSTing to ``{url}/LogEvents``).

Inside this package ``import logging`` is still the standard library (absolute imports).
"""

from __future__ import annotations
