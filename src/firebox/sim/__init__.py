"""Simulation: drives firebox only through its public interfaces (SIP, HTTP), the way a
carrier or an attacker would. Today: ``carrier``, NG911 calls into the BCF."""
