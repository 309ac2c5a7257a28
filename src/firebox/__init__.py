"""firebox: an open-source Next Generation 9-1-1 system.

The NENA i3 functional elements (BCF, ESRP, ECRF/LVF, LIS, Logging Service, Policy Store,
PSAP call handling) in one package. Protocol cores are sans-I/O; see ``../shared/ARCHITECTURE.md``
and ``docs/design.md`` for the shape of the code.
"""

__version__ = "0.1.0"
