"""CAP 1.2 (OASIS Common Alerting Protocol) messages: the codec (``message``), validation
against CAP 1.2 and the IPAWS profile v1.0 (``ipaws``) and enveloped XML signatures
(``dsig``)."""

from firebox.cap.message import CAP_NS, Alert, Area, CapError, Info, Reference, Resource, ValuePair, parse_cap

__all__ = ["CAP_NS", "Alert", "Area", "CapError", "Info", "Reference", "Resource", "ValuePair", "parse_cap"]
