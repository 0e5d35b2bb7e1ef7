"""The ledger: the one source of truth, and the only package that writes SQL."""
