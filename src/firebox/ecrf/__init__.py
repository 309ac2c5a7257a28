"""The ECRF (NENA i3 STA-010 section 4.3): a LoST server (RFC 5222) over service boundaries.

``firebox.ecrf.service`` is the sans-I/O core (``Ecrf``), ``firebox.ecrf.app`` its HTTP
adapter, ``firebox.ecrf.lvf`` the location validation function it can use for civic
addresses.
"""
