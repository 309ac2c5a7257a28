"""Location: geodetic shapes (RFC 5491), civic addresses (RFC 5139), their GML/XML forms,
and PIDF-LO documents (RFC 4119). Sans-I/O, shared by LoST, HELD, the ESRP and the PSAP."""

from firebox.location.civic import CivicAddress
from firebox.location.shapes import ArcBand, Circle, Ellipse, Point, Polygon, Shape, to_geometry

__all__ = ["ArcBand", "CivicAddress", "Circle", "Ellipse", "Point", "Polygon", "Shape", "to_geometry"]
