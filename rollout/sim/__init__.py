"""Simulated parts of the world: test PKI, an APNs stand-in and devices that speak MDM."""
