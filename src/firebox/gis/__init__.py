"""GIS: boundary layers (one per service URN), their loading and quality checks, and the
spatial index the ECRF answers from."""

from firebox.gis.index import Boundary, BoundaryLayer, ServiceIndex

__all__ = ["Boundary", "BoundaryLayer", "ServiceIndex"]
