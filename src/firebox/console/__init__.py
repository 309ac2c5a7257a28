"""The call-taker's console: a web application over the PSAP call handling element
(``firebox.psap.api``) and the CAD (``firebox.cad``). ``firebox.console.app.console_app``
builds it; ``firebox.console.auth`` holds users, roles and sessions; ``firebox.console.audit``
the durable audit trail; ``firebox.console.live`` the Server-Sent Events hub."""
