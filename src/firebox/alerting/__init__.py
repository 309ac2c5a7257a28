"""Public alerts of 9-1-1 outages (CAP 1.2, IPAWS): drafts and their approval (``drafts``),
publication (``publish``: Atom feed, webhook, IPAWS-OPEN spool, i3 log events), the HTTP
views (``http``), and the registry of the business lines the public is told to call
(``businesslines``)."""
