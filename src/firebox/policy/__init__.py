"""The NENA i3 Policy Store (NENA-STA-010.3 section 4.9): policy documents signed by their
owners, stored byte for byte with versions and expiry (``store``), served over REST
(``app``, ``openapi``), and kept in step in the elements that run them (``watch``)."""
