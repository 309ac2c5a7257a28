"""Safe rule changes (firebox issue 6): every BCF rule set and ESRP routing policy change is
signed, versioned, logged, checked against the invariant (no rule may reject or black out
emergency calls from a known carrier) and rolled out in stages: shadow, canary, full, with an
automatic rollback when probes fail or the answer ratio drops."""
