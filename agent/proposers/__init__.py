"""Proposers: what turns the ledger's digest and the parent's trainer into the next committed change."""
